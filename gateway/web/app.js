// natter's page: log in or register, then chat in the lobby or privately,
// see who is online. All text is put in the page as text, never as HTML.

import { t, setLang, currentLang, applyStatic } from './i18n.js';
import { Connection } from './conn.js';

const $ = (id) => document.getElementById(id);
const lobbyKey = 'room:lobby';

const state = {
  me: null,                 // {id, account, name}
  current: lobbyKey,        // key of the open conversation
  convs: new Map(),         // key -> conversation
  online: new Map(),        // id -> {id, name}
  names: new Map(),         // id -> name, from anything seen
  maxText: 4000,
  conn: null,
};

// ---- conversations --------------------------------------------------------

function conv(key) {
  let c = state.convs.get(key);
  if (!c) {
    const [kind, id] = key.split(':');
    c = {
      key, to: kind === 'room' ? { room: id } : { user: id },
      messages: new Map(),   // seq -> message
      pending: new Map(),    // id -> {id, text, status}
      unread: 0, more: true, loaded: false, loading: false,
    };
    state.convs.set(key, c);
  }
  return c;
}

function keyOf(to, from) {
  if (to.room) return `room:${to.room}`;
  const other = from && from.id !== state.me.id ? from.id : to.user;
  return `user:${other}`;
}

function titleOf(c) {
  if (c.to.room) return t('lobby');
  return state.names.get(c.to.user) || c.to.user;
}

function learnName(u) {
  if (u && u.id && u.name) state.names.set(u.id, u.name);
}

function addMessage(m) {
  learnName(m.from);
  const key = keyOf(m.to, m.from);
  const c = conv(key);
  if (c.messages.has(m.seq)) return false;
  c.messages.set(m.seq, m);
  if (m.from.id === state.me.id) c.pending.delete(m.id);
  return key;
}

// ---- rendering ------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// linkify puts text into parent, making http(s) URLs links; everything
// else stays text.
function linkify(parent, text) {
  const re = /\bhttps?:\/\/[^\s<>"']+/g;
  let last = 0;
  for (const m of text.matchAll(re)) {
    parent.append(document.createTextNode(text.slice(last, m.index)));
    let url;
    try { url = new URL(m[0]); } catch { url = null; }
    if (url && (url.protocol === 'http:' || url.protocol === 'https:')) {
      const a = el('a', '', m[0]);
      a.href = url.href;
      a.rel = 'noopener noreferrer nofollow';
      a.target = '_blank';
      parent.append(a);
    } else {
      parent.append(document.createTextNode(m[0]));
    }
    last = m.index + m[0].length;
  }
  parent.append(document.createTextNode(text.slice(last)));
}

function dayLabel(d) {
  const today = new Date();
  const y = new Date(today); y.setDate(today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return t('today');
  if (d.toDateString() === y.toDateString()) return t('yesterday');
  return d.toLocaleDateString(currentLang() === 'zh' ? 'zh-CN' : undefined, { year: 'numeric', month: 'long', day: 'numeric' });
}

function renderMessages({ keepBottom = true, anchor = null } = {}) {
  const box = $('messages');
  const c = conv(state.current);
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const oldHeight = box.scrollHeight;
  box.replaceChildren();
  if (c.loading && c.messages.size > 0) box.append(el('p', 'loading', t('older')));
  let lastDay = '';
  const sorted = [...c.messages.values()].sort((a, b) => a.seq - b.seq);
  for (const m of sorted) {
    const d = new Date(m.ts);
    if (d.toDateString() !== lastDay) {
      lastDay = d.toDateString();
      box.append(el('div', 'day', dayLabel(d)));
    }
    box.append(messageEl(m.from, d, m.text, m.from.id === state.me.id ? 'mine' : '', m.seq));
  }
  for (const p of c.pending.values()) {
    const e = messageEl(state.me, new Date(), p.text, `mine ${p.status}`);
    const mark = el('span', 'mark', t(`status.${p.status}`));
    e.querySelector('.meta').append(mark);
    if (p.status === 'failed') {
      const b = el('button', 'retry', t('retry'));
      b.type = 'button';
      b.addEventListener('click', () => sendText(p.text, p.id));
      e.querySelector('.meta').append(b);
    }
    box.append(e);
  }
  if (anchor !== null) box.scrollTop = box.scrollHeight - oldHeight + anchor;
  else if (keepBottom || atBottom) box.scrollTop = box.scrollHeight;
}

function messageEl(from, date, text, cls, seq) {
  const e = el('article', `msg ${cls}`);
  if (seq) e.dataset.seq = seq;
  const meta = el('div', 'meta');
  meta.append(el('span', 'name', from.name || from.id));
  const time = el('time', 'time', date.toLocaleTimeString(currentLang() === 'zh' ? 'zh-CN' : undefined, { hour: '2-digit', minute: '2-digit' }));
  time.dateTime = date.toISOString();
  meta.append(time);
  const body = el('p', 'text');
  linkify(body, text);
  e.append(meta, body);
  return e;
}

function renderSide() {
  const list = $('conv-list');
  list.replaceChildren();
  conv(lobbyKey);
  const keys = [lobbyKey, ...[...state.convs.keys()].filter((k) => k !== lobbyKey)];
  for (const key of keys) {
    const c = conv(key);
    const li = el('li');
    const b = el('button', key === state.current ? 'conv current' : 'conv', titleOf(c));
    b.type = 'button';
    b.dataset.key = key;
    if (key === state.current) b.setAttribute('aria-current', 'true');
    if (c.unread > 0) b.append(el('span', 'unread', String(c.unread)));
    b.addEventListener('click', () => openConv(key));
    li.append(b);
    list.append(li);
  }
  const online = $('online-list');
  online.replaceChildren();
  const users = [...state.online.values()].sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
  $('online-count').textContent = `(${users.length})`;
  for (const u of users) {
    const li = el('li');
    const label = (u.name || u.id) + (u.id === state.me.id ? ` ${t('you')}` : '');
    const b = el('button', 'user', label);
    b.type = 'button';
    b.dataset.user = u.id;
    b.addEventListener('click', () => openConv(`user:${u.id}`));
    li.append(b);
    online.append(li);
  }
  $('conv-title').textContent = titleOf(conv(state.current));
}

function openConv(key) {
  state.current = key;
  const c = conv(key);
  c.unread = 0;
  if (!c.to.room && !state.names.has(c.to.user)) fetchNames([c.to.user]);
  if (!c.loaded) loadHistory(c);
  renderSide();
  renderMessages();
  $('side').classList.remove('open');
  $('toggle-side').setAttribute('aria-expanded', 'false');
  $('msg').focus();
}

function loadHistory(c, before = 0) {
  if (c.loading || !state.conn) return;
  c.loading = true;
  state.conn.request({ type: 'history', to: c.to, before, limit: 50 });
}

async function fetchNames(ids) {
  try {
    const r = await fetch(`/api/users?ids=${ids.map(encodeURIComponent).join(',')}`);
    if (!r.ok) return;
    const body = await r.json();
    for (const u of body.users) learnName(u);
    renderSide();
  } catch { /* names stay ids */ }
}

// ---- frames ---------------------------------------------------------------

function onFrame(f) {
  switch (f.type) {
    case 'hello':
      state.maxText = f.limits?.max_text_chars || state.maxText;
      learnName(f.user);
      break;
    case 'message': {
      const key = addMessage(f);
      if (!key) break;
      if (key !== state.current && f.from.id !== state.me.id) conv(key).unread++;
      renderSide();
      if (key === state.current) renderMessages({ keepBottom: f.from.id === state.me.id });
      break;
    }
    case 'history': {
      const c = conv(keyOf(f.to, null));
      const box = $('messages');
      const anchor = c.loaded ? box.scrollTop : null;
      for (const m of f.messages) addMessage(m);
      c.loaded = true;
      c.loading = false;
      c.more = f.more;
      if (c.key === state.current) renderMessages(anchor === null ? {} : { anchor });
      break;
    }
    case 'presence':
      if (f.users) {
        state.online = new Map(f.users.map((u) => [u.id, u]));
        f.users.forEach(learnName);
      } else if (f.online) {
        state.online.set(f.user.id, f.user);
        learnName(f.user);
      } else {
        state.online.delete(f.user.id);
      }
      renderSide();
      break;
    case 'error':
      console.warn('natter:', f.code, f.message);
      break;
  }
}

function setConnState(s) {
  const e = $('conn-state');
  e.hidden = false;
  e.dataset.state = s;
  e.textContent = t(`state.${s}`);
}

// ---- sending ----------------------------------------------------------------

function newID() {
  const b = new Uint8Array(12);
  crypto.getRandomValues(b);
  return 'm' + [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

function sendText(text, id = newID()) {
  const c = conv(state.current);
  c.pending.set(id, { id, text, status: 'pending' });
  state.conn.send({ type: 'send', id, to: c.to, text });
  renderMessages();
}

function updateCounter() {
  const n = [...$('msg').value].length;
  const counter = $('counter');
  counter.textContent = n > state.maxText * 0.8 ? `${n}/${state.maxText}` : '';
  counter.classList.toggle('over', n > state.maxText);
  $('send').disabled = n > state.maxText || $('msg').value.trim() === '';
}

function submitComposer(ev) {
  ev?.preventDefault();
  const box = $('msg');
  // Blank lines at either end are never meant.
  const text = box.value.replace(/^(\s*\n)+/, '').replace(/(\n\s*)+$/, '');
  if (text.trim() === '' || [...text].length > state.maxText) return;
  sendText(text);
  box.value = '';
  updateCounter();
}

// ---- auth -----------------------------------------------------------------

async function api(path, body) {
  const r = await fetch(path, {
    method: 'POST',
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
  });
  let data = null;
  try { data = await r.json(); } catch { /* 204 */ }
  return { status: r.status, data, retryAfter: r.headers.get('Retry-After') };
}

function showFormErrors(form, res) {
  for (const p of form.querySelectorAll('.field-error, .form-error')) p.textContent = '';
  const err = res.data?.error;
  if (!err) return;
  let text;
  switch (err.code) {
    case 'invalid_input': text = err.field && ['account', 'password', 'name'].includes(err.field) ? t(`err.${err.field}`) : err.message; break;
    case 'rate_limited': text = t('err.rate_limited', { s: res.retryAfter || '60' }); break;
    default: text = t(`err.${err.code}`);
  }
  const target = (err.field && form.querySelector(`.field-error[data-for="${err.field}"]`)) || form.querySelector('.form-error');
  target.textContent = text;
}

function showView(which) {
  $('auth-view').hidden = which !== 'auth';
  $('chat-view').hidden = which !== 'chat';
  $('logout').hidden = which !== 'chat';
  $('me').hidden = which !== 'chat';
  if (which !== 'chat') $('conn-state').hidden = true;
}

function startChat(user) {
  state.me = user;
  learnName(user);
  $('me').textContent = user.name;
  state.convs.clear();
  state.current = lobbyKey;
  showView('chat');
  state.conn = new Connection({
    onFrame,
    onState: setConnState,
    onLive: () => { const c = conv(state.current); if (!c.loaded) { c.loading = false; loadHistory(c); } },
    onAck: () => {},
    onSendError: (id, code) => {
      for (const c of state.convs.values()) {
        const p = c.pending.get(id);
        if (p) { p.status = 'failed'; p.code = code; }
      }
      renderMessages();
    },
    onSessionEnd: () => endSession(t('err.session')),
  });
  state.conn.connect();
  renderSide();
  renderMessages();
}

function endSession(message) {
  state.conn?.stop();
  state.conn = null;
  state.me = null;
  showView('auth');
  if (message) $('login-form').querySelector('.form-error').textContent = message;
}

async function boot() {
  applyStatic();
  $('lang').value = currentLang();
  $('lang').addEventListener('change', (e) => { setLang(e.target.value); if (state.me) { renderSide(); renderMessages(); } });

  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    try {
      const res = await api('/api/login', { account: form.account.value, password: form.password.value });
      if (res.status === 200) { form.reset(); showFormErrors(form, res); startChat(res.data.user); } else showFormErrors(form, res);
    } catch { form.querySelector('.form-error').textContent = t('err.network'); }
  });
  $('register-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    try {
      const res = await api('/api/register', { account: form.account.value, password: form.password.value, name: form.name.value });
      showFormErrors(form, res);
      if (res.status === 201) {
        $('login-account').value = form.account.value;
        form.reset();
        form.querySelector('.form-error').textContent = t('register.done');
        $('login-password').focus();
      }
    } catch { form.querySelector('.form-error').textContent = t('err.network'); }
  });
  $('logout').addEventListener('click', async () => {
    try { await api('/api/logout'); } catch { /* the cookie expires anyway */ }
    endSession('');
  });
  $('composer').addEventListener('submit', submitComposer);
  $('msg').addEventListener('input', updateCounter);
  $('msg').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) submitComposer(ev);
  });
  $('messages').addEventListener('scroll', () => {
    const c = conv(state.current);
    if ($('messages').scrollTop < 40 && c.loaded && c.more && !c.loading && c.messages.size > 0) {
      const oldest = Math.min(...c.messages.keys());
      loadHistory(c, oldest);
      renderMessages({ anchor: $('messages').scrollTop });
    }
  });
  $('toggle-side').addEventListener('click', () => {
    const open = $('side').classList.toggle('open');
    $('toggle-side').setAttribute('aria-expanded', String(open));
  });
  updateCounter();

  // Still logged in (the cookie) after a reload?
  try {
    const r = await fetch('/api/me');
    if (r.ok) { startChat((await r.json()).user); return; }
  } catch { /* show the forms */ }
  showView('auth');
}

boot();
