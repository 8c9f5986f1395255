// natter's page: log in or register, then chat in the lobby or privately,
// see who is online. All text is put in the page as text, never as HTML.

import { t, has, setLang, currentLang, applyStatic } from './i18n.js';
import { Connection } from './conn.js';
import { isAtBottom, captureAnchor, restoreAnchor, stickToBottom } from './scroll.js';
import { wireAccount, stillLoggedIn } from './account.js';
import { wireRooms, resetRooms, onRoomFrame, onRoomError, roomJoined, roomLeft, roomMember, openRoomPanel, renderPanel } from './rooms.js';

const $ = (id) => document.getElementById(id);
const lobbyKey = 'room:lobby';
// historyPage is how many messages one history request asks for.
const historyPage = 50;
// loadOlderPx: within this distance of the top, older messages load.
const loadOlderPx = 300;
// historyRetryMs: a refused history request is asked again after this.
const historyRetryMs = 2000;
// readEveryMs: a conversation's read cursor is sent at most this often.
const readEveryMs = 1000;
// retryMs: a refused read, conversations or online search request is
// sent again after this.
const retryMs = 2000;
// typingShownMs: someone's typing line goes this long after their last
// typing frame (chat.TypingShown).
const typingShownMs = 6000;
// typingEveryMs: the page says you are typing at most this often (the
// gateway drops more: chat.TypingInterval).
const typingEveryMs = 3000;
// typingRoomMax: rooms with more members get no typing (the gateway's
// TYPING_ROOM_MAX default relays none there).
const typingRoomMax = 200;
// previewChars: the longest preview the list shows (chat.PreviewChars).
const previewChars = 100;

const state = {
  me: null,                 // {id, account, name}
  current: lobbyKey,        // key of the open conversation
  convs: new Map(),         // key -> conversation
  names: new Map(),         // id -> name, from anything seen
  accounts: new Map(),      // id -> account handle, from /api/users
  maxText: 4000,
  conn: null,
  connState: null,
  historySeq: 0,
  historyReqs: new Map(),   // request id -> {key, before}, until answered
  reqSeq: 0,
  readReqs: new Map(),      // read request id -> {c, prev}, until refused (reads are not acked)
  convReq: null,            // id of the asked page of older conversations
  convMore: false,          // the server has older conversations than the list
  convCursor: 0,            // last.seq of the oldest listed: the next page's "before"
  typingSentAt: 0,          // when this page last sent typing (ms)
  liveAt: 0,                // when the socket last went live (ms)
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
      unread: 0,             // messages after the read cursor, as the server counts them
      unseen: 0,             // while open but scrolled up
      last: 0,               // newest seq, for the list's order
      more: true, loaded: false, loading: false,
      readSeq: 0,            // the read cursor, as the server last said
      counted: 0,            // the server's unread count covers messages up to here
      shown: 0,              // newest seq this page has shown (the cursor it sends)
      sentRead: 0,           // newest seq sent in a read
      readAt: 0,             // when the last read was sent (ms)
      readTimer: null,
      seen: 0,               // direct: the other person has read up to here
      room: null,            // a room's {id, name, visibility, owner, members} (not the lobby's)
      title: '',             // the server's title
      preview: null,         // the newest message: {seq, from, text}
      typing: new Map(),     // user id -> {user, timer}: who is typing here
      joinedAt: 0,           // when this page was told the user joined (ms)
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
  if (c.key === lobbyKey) return t('lobby');
  if (c.to.room) return c.room?.name || c.title || t('room.unknown');
  return labelOf(userOf(c.to.user));
}

// roomCount is "12 members".
function roomCount(n) {
  return t(n === 1 ? 'room.count.one' : 'room.count', { n });
}

function learnName(u) {
  if (u && u.id && u.name) state.names.set(u.id, u.name);
  if (u && u.id && u.account) state.accounts.set(u.id, u.account);
}

function addMessage(m) {
  learnName(m.from);
  const key = keyOf(m.to, m.from);
  const c = conv(key);
  if (c.messages.has(m.seq)) return false;
  c.messages.set(m.seq, m);
  c.last = Math.max(c.last, m.seq);
  if (!c.preview || m.seq > c.preview.seq) c.preview = { seq: m.seq, from: m.from, text: m.text.slice(0, previewChars) };
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

// userOf is what the page knows of user id.
function userOf(id) {
  return { id, name: state.names.get(id), account: state.accounts.get(id) };
}

// handleOf is u's account handle, from the frame or learned before; ''
// while unknown, and then asked of auth.
function handleOf(u) {
  const h = u.account || state.accounts.get(u.id) || '';
  if (!h) wantAccount(u.id);
  return h;
}

// whoEl shows a user as the page shows every user: the display name, then
// the account handle. Names are not unique, handles are: the handle is
// always there, and where space is short the name is cut, never the
// handle. The name is isolated (bdi) so its direction cannot move the
// handle; page labels such as "you" are elements of their own beside it.
function whoEl(u, cls = 'who') {
  const e = el('span', cls);
  const name = u.name || state.names.get(u.id) || u.id;
  e.append(el('bdi', 'name', name));
  const h = handleOf(u);
  e.append(el('span', h ? 'handle' : 'handle unknown', `@${h || '…'}`));
  e.title = labelOf(u);
  return e;
}

// labelOf is whoEl as text, for announcements and accessible names.
function labelOf(u) {
  const name = u.name || state.names.get(u.id) || u.id;
  const h = u.account || state.accounts.get(u.id);
  return h ? `${name} @${h}` : name;
}

// Handles missing from what the page was sent (messages stored before
// tokens carried them) are asked of /api/users, a batch at a time; an id
// that got no answer is asked again after accountRetryMs.
const accountRetryMs = 5000;
const accountsAsked = new Set();
let accountsWanted = [];

function wantAccount(id) {
  if (!id || accountsAsked.has(id)) return;
  accountsAsked.add(id);
  accountsWanted.push(id);
  if (accountsWanted.length === 1) setTimeout(askAccounts, 0);
}

async function askAccounts() {
  const ids = accountsWanted;
  accountsWanted = [];
  for (let i = 0; i < ids.length; i += 100) await fetchNames(ids.slice(i, i + 100));
  const missing = ids.filter((id) => !state.accounts.has(id));
  if (missing.length > 0) setTimeout(() => missing.forEach((id) => accountsAsked.delete(id)), accountRetryMs);
  if (state.me && ids.length > missing.length) renderMessages();
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

function locale() { return currentLang() === 'zh' ? 'zh-CN' : undefined; }

function dayLabel(d) {
  const today = new Date();
  const y = new Date(today); y.setDate(today.getDate() - 1);
  if (d.toDateString() === today.toDateString()) return t('today');
  if (d.toDateString() === y.toDateString()) return t('yesterday');
  return d.toLocaleDateString(locale(), { year: 'numeric', month: 'long', day: 'numeric' });
}

// renderMessages redraws the open conversation. where says where the view
// goes: 'bottom' (the newest message), 'keep' (the message at the top of
// the view stays where it is: older pages, messages arriving while the
// reader is scrolled up), or 'auto' (bottom if it was there, else keep).
function renderMessages(where = 'auto') {
  const box = $('messages');
  const c = conv(state.current);
  const toBottom = where === 'bottom' || (where === 'auto' && isAtBottom(box));
  const anchor = toBottom ? null : captureAnchor(box);
  box.replaceChildren();
  if (c.loading && c.loaded) box.append(el('p', 'loading', t('older')));
  if (c.loaded && !c.more) box.append(el('p', 'start', t('start')));
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
  for (const p of c.pending.values()) box.append(pendingEl(p));
  renderSeen();
  if (toBottom) {
    box.scrollTop = box.scrollHeight;
    c.unseen = 0;
  } else {
    restoreAnchor(box, anchor);
  }
  renderJump();
  noteShown();
}

function pendingEl(p) {
  const e = messageEl(state.me, new Date(), p.text, `mine ${p.status}`);
  e.querySelector('.meta').append(el('span', 'mark', t(`status.${p.status}`)));
  if (p.status === 'failed') {
    const b = el('button', 'retry', t('retry'));
    b.type = 'button';
    b.addEventListener('click', () => sendText(p.text, p.id));
    e.querySelector('.meta').append(b);
    const why = sendErrorText(p);
    if (why) e.append(el('p', 'reason', why));
  }
  return e;
}

// sendErrorText is why a send was refused for good, in the page's
// language where the page knows the code: a spent quota says when sending
// resumes (the frame's retry_after, in seconds, as a time of day, so it
// stays true while it is on screen).
function sendErrorText(p) {
  if (p.code === 'quota_exceeded') {
    const wait = p.retryAfter;
    if (wait == null) return t('err.quota_exceeded.later');
    const at = new Date(p.failedAt + wait * 1000);
    return t('err.quota_exceeded', { time: at.toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit', second: '2-digit' }) });
  }
  return has(`err.${p.code}`) ? t(`err.${p.code}`) : (p.message || p.code || '');
}

// renderSeen marks, in a direct conversation, the last of your messages
// the other person has read.
function renderSeen() {
  const box = $('messages');
  for (const m of box.querySelectorAll('.seen')) m.remove();
  const c = conv(state.current);
  if (c.to.room || c.seen === 0) return;
  const mine = [...box.querySelectorAll('.msg.mine[data-seq]')].filter((e) => Number(e.dataset.seq) <= c.seen);
  const last = mine[mine.length - 1];
  if (!last) return;
  const mark = el('span', 'mark seen', t('seen'));
  mark.title = t('seen.by', { name: labelOf(userOf(c.to.user)) });
  last.querySelector('.meta').append(mark);
}

function messageEl(from, date, text, cls, seq) {
  const e = el('article', `msg ${cls}`);
  if (seq) e.dataset.seq = seq;
  const meta = el('div', 'meta');
  meta.append(whoEl(from));
  const time = el('time', 'time', date.toLocaleTimeString(locale(), { hour: '2-digit', minute: '2-digit' }));
  time.dateTime = date.toISOString();
  meta.append(time);
  const body = el('p', 'text');
  linkify(body, text);
  e.append(meta, body);
  return e;
}

// renderJump shows "N new messages" while messages arrived below the view.
function renderJump() {
  const c = conv(state.current);
  const b = $('jump');
  b.hidden = c.unseen === 0;
  b.textContent = c.unseen === 1 ? t('jump.one') : t('jump.many', { n: c.unseen });
}

function renderSide() {
  renderConvList();
  renderOnline();
  renderHead();
  renderMenuBadge();
}

// renderConvList draws the conversations: the lobby on top, then rooms
// and private conversations, most recent activity first, each with its
// newest message (or who is typing) and what is unread. Focus stays on
// the entry it was on.
function renderConvList() {
  const list = $('conv-list');
  const focused = document.activeElement?.closest?.('#conv-list')
    ? (document.activeElement.dataset.key || document.activeElement.id) : null;
  list.replaceChildren();
  conv(lobbyKey);
  const others = [...state.convs.values()].filter((c) => c.key !== lobbyKey).sort((a, b) => b.last - a.last);
  for (const c of [conv(lobbyKey), ...others]) {
    const li = el('li');
    const b = el('button', c.key === state.current ? 'conv current' : 'conv');
    b.type = 'button';
    b.dataset.key = c.key;
    // First line: the title and what is unread; second: what kind of
    // conversation (a room's member count) and its newest message.
    const line = el('span', 'line');
    const sub = el('span', 'sub');
    if (c.to.room) {
      line.append(el('bdi', 'title', titleOf(c)));
      if (c.room) {
        const kind = c.room.visibility === 'private' ? `${t('visibility.private')} · ${roomCount(c.room.members)}` : roomCount(c.room.members);
        sub.append(el('span', 'kind', kind));
      }
    } else {
      line.append(whoEl(userOf(c.to.user), 'title who'));
      sub.append(el('span', 'kind', t('private')));
    }
    if (c.unread > 0) {
      const u = el('span', 'unread', String(c.unread));
      u.setAttribute('aria-label', t('unread.aria', { n: c.unread }));
      line.append(u);
    }
    const pv = previewOf(c);
    if (pv) sub.append(el('span', c.typing.size > 0 ? 'preview typing-preview' : 'preview', pv));
    b.append(line);
    if (sub.childNodes.length > 0) b.append(sub);
    if (c.key === state.current) b.setAttribute('aria-current', 'true');
    b.addEventListener('click', () => openConv(c.key));
    li.append(b);
    list.append(li);
  }
  if (state.convMore) {
    const li = el('li');
    const b = el('button', 'conv-more', t(state.convReq ? 'conv.loading' : 'conv.more'));
    b.type = 'button';
    b.id = 'conv-more';
    b.disabled = state.convReq !== null;
    b.addEventListener('click', loadOlderConversations);
    li.append(b);
    list.append(li);
  }
  if (focused) (list.querySelector(`.conv[data-key="${CSS.escape(focused)}"]`) || $(focused))?.focus();
}

// previewOf is the line under a conversation's title: who is typing, or
// its newest message ("You: …" for yours; in a room, whose it is).
function previewOf(c) {
  if (c.typing.size > 0) return typingText(c);
  const p = c.preview;
  if (!p) return '';
  const text = p.text.replace(/\s+/g, ' ');
  if (p.from.id === state.me.id) return `${t('preview.you')}: ${text}`;
  if (c.to.room) return `${labelOf(p.from)}: ${text}`;
  return text;
}

function renderHead() {
  const c = conv(state.current);
  if (c.to.room) $('conv-title').textContent = titleOf(c);
  else $('conv-title').replaceChildren(whoEl(userOf(c.to.user)));
  let sub;
  const room = c.to.room && c.key !== lobbyKey;
  $('room-info').hidden = !room;
  if (c.key === lobbyKey) sub = t('lobby.sub');
  else if (room) {
    const n = c.room ? c.room.members : null;
    const kind = t(c.room?.visibility === 'private' ? 'room.kind.private' : 'room.kind.public');
    sub = n === null ? kind : `${kind} · ${roomCount(n)}`;
    $('room-info-count').textContent = n === null ? '' : String(n);
  } else {
    const name = state.names.get(c.to.user) || c.to.user;
    const account = state.accounts.get(c.to.user);
    sub = account ? t('dm.sub', { name, account }) : t('dm.sub.noaccount', { name });
  }
  $('conv-sub').textContent = sub;
}

// renderMenuBadge puts the unread count (and, when one conversation has
// them all, its name) on the drawer's toggle and in the tab's title.
function renderMenuBadge() {
  const withUnread = [...state.convs.values()].filter((c) => c.unread > 0);
  const total = withUnread.reduce((n, c) => n + c.unread, 0);
  const badge = $('menu-unread');
  badge.hidden = total === 0;
  badge.textContent = String(total);
  badge.setAttribute('aria-label', t('unread.aria', { n: total }));
  const toggle = $('toggle-side');
  if (withUnread.length === 1) {
    toggle.dataset.which = withUnread[0].key;
    $('toggle-label').textContent = titleOf(withUnread[0]);
  } else {
    delete toggle.dataset.which;
    $('toggle-label').textContent = t('menu');
  }
  document.title = total > 0 ? `(${total}) natter` : 'natter';
}

function announce(text) {
  // Re-set, so the same words twice are read twice.
  const a = $('announcer');
  a.textContent = '';
  requestAnimationFrame(() => { a.textContent = text; });
}

// openConv shows a conversation; focus goes to the composer unless the
// page moved on its own (the open room was left on another device).
function openConv(key, focus = true) {
  const c = conv(key);
  state.current = key;
  c.unseen = 0;
  if (!c.to.room && !state.accounts.has(c.to.user)) fetchNames([c.to.user]);
  if (!c.loaded) loadHistory(c);
  renderSide();
  renderMessages('bottom');
  renderTyping();
  if (focus) {
    setDrawer(false);
    $('msg').focus();
  }
}

function loadHistory(c, before = 0) {
  if (c.loading || !state.conn?.live) return;
  c.loading = true;
  const id = `h${++state.historySeq}`;
  state.historyReqs.set(id, { key: c.key, before });
  state.conn.request({ type: 'history', id, to: c.to, before, limit: historyPage });
}

// onHistoryError: a refused page (rate_limited, unavailable) is asked for
// again a little later, so the list never stays "loading" for good.
function onHistoryError(f) {
  const req = state.historyReqs.get(f.id);
  state.historyReqs.delete(f.id);
  const c = conv(req.key);
  c.loading = false;
  if (f.code === 'rate_limited' || f.code === 'unavailable') {
    setTimeout(() => loadHistory(c, req.before), historyRetryMs);
  }
}

// loadOlderIfNeeded asks for the page before the oldest message shown
// when the reader is near the top, or when the messages do not fill the
// view (there is nothing to scroll yet).
function loadOlderIfNeeded() {
  const box = $('messages');
  const c = conv(state.current);
  if (!c.loaded || !c.more || c.loading || c.messages.size === 0) return;
  if (box.scrollTop > loadOlderPx && box.scrollHeight > box.clientHeight) return;
  loadHistory(c, Math.min(...c.messages.keys()));
  renderMessages('keep');
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

// requestLive sends a request frame if the socket is live; it says
// whether it went.
function requestLive(frame) {
  if (!state.conn?.live) return false;
  state.conn.request(frame);
  return true;
}

// ---- frames ---------------------------------------------------------------

function onFrame(f) {
  switch (f.type) {
    case 'hello':
      state.maxText = f.limits?.max_text_chars || state.maxText;
      learnName(f.user);
      break;
    case 'message': onMessage(f); break;
    case 'history': onHistory(f); break;
    case 'presence':
      onPresence(f);
      renderSide();
      renderPanel();
      break;
    case 'online_count': onOnlineCount(f); break;
    case 'online': onOnlineAnswer(f); break;
    case 'conversations': onConversations(f); break;
    case 'read': onRead(f); break;
    case 'seen': onSeen(f); break;
    case 'typing': onTyping(f); break;
    case 'joined': onJoined(f); break;
    case 'left': onLeft(f); break;
    case 'member': onMember(f); break;
    case 'error':
      if (f.id && state.historyReqs.has(f.id)) onHistoryError(f);
      else if (f.id && state.readReqs.has(f.id)) onReadError(f);
      else if (f.id && f.id === state.convReq) onConversationsError(f);
      else if (!onRoomError(f) && !onOnlineError(f)) console.warn('natter:', f.code, f.message);
      break;
    default: onRoomFrame(f);
  }
}

// ---- rooms -------------------------------------------------------------------

// addRoom lists a room the user is in (joined, or created here), as
// active now: it goes to the top of the list. item is its list entry,
// where the server sent one.
function addRoom(room, item) {
  const isNew = !state.convs.get(`room:${room.id}`)?.room;
  if (item) applyItem(item);
  const c = conv(`room:${room.id}`);
  c.room = { ...c.room, ...room };
  if (isNew) {
    c.joinedAt = Date.now();
    c.last = Math.max(c.last, state.conn?.lastSeq || 0);
  }
  renderSide();
}

// onJoined: the user is in a room now, joined here or on another device;
// the frame has the room's list entry (its newest message, what is
// unread).
function onJoined(f) {
  addRoom(f.room, f.conversation);
  roomJoined(f.room);
}

// onLeft: the user left a room, here or on another device: it leaves
// the list, and the lobby opens if it was open.
function onLeft(f) {
  const key = `room:${f.room.id}`;
  const c = state.convs.get(key);
  if (c) forget(c);
  // Left here (from its panel): the lobby opens for typing. Left on
  // another device: the lobby shows, and focus stays where it was.
  const here = $('room-dialog').open;
  roomLeft(f.room);
  if (state.current === key) openConv(lobbyKey, here);
  renderSide();
  announce(t('room.left', { name: f.room.name }));
}

// forget drops a conversation and its timers.
function forget(c) {
  clearTimeout(c.readTimer);
  for (const x of c.typing.values()) clearTimeout(x.timer);
  state.convs.delete(c.key);
}

// onMember: someone joined or left a room the user is in.
function onMember(f) {
  learnName(f.user);
  const c = state.convs.get(`room:${f.room}`);
  if (c) {
    c.room = { ...(c.room || { id: f.room }), members: f.members };
    if (!f.joined) dropTyping(c, f.user.id);
    renderSide();
  }
  roomMember(f);
}

// people is whom the user could invite: who is online (while the online
// list is partial, the user's contacts online), then those they have
// private conversations with, by name.
function people() {
  const byId = new Map(onlineUsers().map((u) => [u.id, u]));
  for (const c of state.convs.values()) if (c.to.user && !byId.has(c.to.user)) byId.set(c.to.user, userOf(c.to.user));
  return [...byId.values()].sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
}

// ---- typing ----------------------------------------------------------------------

// onTyping: someone is typing in a conversation of the user's (to names
// the room, or in a private conversation the typist).
function onTyping(f) {
  if (!f.user || !f.to || f.user.id === state.me.id) return;
  const c = state.convs.get(f.to.room ? `room:${f.to.room}` : `user:${f.to.user}`);
  if (!c) return;
  learnName(f.user);
  const was = c.typing.get(f.user.id);
  clearTimeout(was?.timer);
  const timer = setTimeout(() => dropTyping(c, f.user.id), typingShownMs);
  c.typing.set(f.user.id, { user: f.user, timer });
  if (!was) typingChanged(c);
}

// dropTyping ends someone's typing line: it timed out, or their message came.
function dropTyping(c, id) {
  const x = c.typing.get(id);
  if (!x) return;
  clearTimeout(x.timer);
  c.typing.delete(id);
  typingChanged(c);
}

function typingChanged(c) {
  if (state.convs.get(c.key) !== c) return;
  if (c.key === state.current) renderTyping();
  renderConvList();
}

// typingText says who is typing in c: "Alice is typing…", "Alice and
// Bob are typing…", "Alice, Bob and 2 others are typing…".
function typingText(c) {
  const names = [...c.typing.values()].map((x) => x.user.name || state.names.get(x.user.id) || x.user.id);
  if (names.length === 0) return '';
  if (names.length === 1) return t('typing.one', { a: names[0] });
  if (names.length === 2) return t('typing.two', { a: names[0], b: names[1] });
  return t('typing.many', { a: names[0], b: names[1], n: names.length - 2 });
}

function renderTyping() {
  $('typing').textContent = typingText(conv(state.current));
}

// noteTyping tells the open conversation's others that you are typing:
// not in the lobby or a room too big for it, at most once per
// typingEveryMs.
function noteTyping() {
  const c = conv(state.current);
  if (c.key === lobbyKey || (c.room && c.room.members > typingRoomMax)) return;
  if ($('msg').value.trim() === '' || !state.conn?.live) return;
  const now = Date.now();
  if (now - state.typingSentAt < typingEveryMs) return;
  state.typingSentAt = now;
  state.conn.request({ type: 'typing', to: c.to });
}

// othersAfter counts c's messages the page holds from others after seq.
function othersAfter(c, seq) {
  let n = 0;
  for (const m of c.messages.values()) if (m.seq > seq && m.from.id !== state.me.id) n++;
  return n;
}

// onConversations takes the server's list (after every connect, and each
// page of older ones asked for): every conversation the user has had, its
// newest message and what is unread, as every device of theirs sees it.
function onConversations(f) {
  const asked = f.id && f.id === state.convReq;
  if (asked) state.convReq = null;
  const listed = new Set();
  for (const it of f.items) listed.add(applyItem(it).key);
  // The whole list after a connect: a room not in it was left meanwhile
  // (one joined since the socket went live may not be in it yet).
  if (!f.id && !f.more) {
    for (const c of [...state.convs.values()]) {
      if (c.to.room && c.key !== lobbyKey && !listed.has(c.key) && c.joinedAt < state.liveAt) {
        forget(c);
        if (state.current === c.key) openConv(lobbyKey, false);
      }
    }
  }
  if (asked || state.convCursor === 0) {
    state.convMore = f.more;
    const dated = f.items.filter((it) => it.last);
    if (dated.length > 0) state.convCursor = dated[dated.length - 1].last.seq;
    else state.convMore = false;
  }
  renderSide();
  noteShown();
}

// applyItem takes one entry of the server's conversation list (or of a
// joined frame): title, room, newest message, read cursor and unread
// count.
function applyItem(it) {
  if (it.user && (it.user.account || it.user.name !== it.user.id)) learnName(it.user);
  if (it.last) learnName(it.last.from);
  const c = conv(keyOf(it.to, null));
  if (it.room) c.room = { ...c.room, ...it.room };
  if (it.title) c.title = it.title;
  if (it.last && (!c.preview || it.last.seq > c.preview.seq)) c.preview = { seq: it.last.seq, from: it.last.from, text: it.last.text };
  // The other person's cursor, where the server lists it: "Seen"
  // survives a reload.
  if (!it.to.room && it.seen > c.seen) c.seen = it.seen;
  const lastSeq = it.last?.seq || 0;
  c.last = Math.max(c.last, lastSeq);
  // A list older than a read this page sent or was told of is stale
  // about what is unread; that read's frame says it.
  if (it.read >= Math.max(c.readSeq, c.sentRead, c.shown)) {
    c.readSeq = it.read;
    // Whoever wrote last has read what came before: the server counts
    // every message after the cursor, your own too.
    const mineLast = it.last?.from.id === state.me.id;
    c.unread = (mineLast ? 0 : it.unread) + othersAfter(c, Math.max(lastSeq, it.read));
  }
  c.counted = Math.max(c.counted, lastSeq);
  return c;
}

function onConversationsError(f) {
  state.convReq = null;
  if (f.code === 'rate_limited' || f.code === 'unavailable') setTimeout(loadOlderConversations, retryMs);
  renderSide();
}

// loadOlderConversations asks for the page of conversations after the
// oldest listed.
function loadOlderConversations() {
  if (state.convReq || !state.convMore || !state.conn?.live) return;
  state.convReq = `c${++state.reqSeq}`;
  state.conn.request({ type: 'conversations', id: state.convReq, before: state.convCursor });
  renderSide();
}

// onRead: this user's read cursor of a conversation moved (on this device
// or another): what is left unread is the server's count.
function onRead(f) {
  const key = keyOf(f.to, null);
  // Not listed (a room left meanwhile, or a conversation on a page not
  // loaded yet): a receipt does not add it; the list brings its state.
  if (!state.convs.has(key)) return;
  const c = conv(key);
  if (f.seq < c.readSeq) return; // an older read, overtaken
  c.readSeq = f.seq;
  // This page showed more than that read says: its own read follows.
  // The count is as of when the server made it: a message that arrived
  // here since, after the cursor, is unread too.
  if (f.seq >= c.shown) c.unread = Math.max(f.unread, othersAfter(c, f.seq));
  renderSide();
}

// onSeen: the other person of a direct conversation read up to f.seq.
function onSeen(f) {
  const key = keyOf(f.to, null);
  if (!state.convs.has(key)) return; // as in onRead
  const c = conv(key);
  if (f.seq <= c.seen) return;
  c.seen = f.seq;
  if (c.key === state.current) renderSeen();
}

// reading says whether the reader sees the open conversation's newest
// messages: the tab shown, the drawer shut, the list at its bottom.
function reading() {
  return document.visibilityState === 'visible' && !drawerOpen() && isAtBottom($('messages'));
}

// noteShown records the newest message of the open conversation as read
// when the reader sees it, and sends the cursor.
function noteShown() {
  if (!state.me) return;
  const c = conv(state.current);
  if (!c.loaded || c.messages.size === 0 || !reading()) return;
  const seq = Math.max(...c.messages.keys());
  if (seq <= c.shown) return;
  c.shown = seq;
  if (c.unread > 0) {
    c.unread = 0;
    renderSide();
  }
  flushRead(c);
}

// flushRead sends c's read cursor when it moved past what was sent, at
// most once per readEveryMs per conversation (now, when leaving).
function flushRead(c, leaving = false) {
  if (state.convs.get(c.key) !== c || (c.readTimer && !leaving)) return;
  if (c.shown <= Math.max(c.sentRead, c.readSeq)) return;
  const wait = leaving ? 0 : c.readAt + readEveryMs - Date.now();
  if (wait > 0) {
    c.readTimer = setTimeout(() => { c.readTimer = null; flushRead(c); }, wait);
    return;
  }
  if (!state.conn?.live) return; // onLive sends it
  clearTimeout(c.readTimer);
  c.readTimer = null;
  const id = `r${++state.reqSeq}`;
  state.readReqs.set(id, { c, prev: c.sentRead });
  // Reads are not acknowledged: forget the request once a refusal would
  // have come.
  setTimeout(() => state.readReqs.delete(id), 30000);
  c.readAt = Date.now();
  c.sentRead = c.shown;
  state.conn.request({ type: 'read', id, to: c.to, seq: c.shown });
}

// flushReads sends every read cursor still held back by the throttle: the
// reader is leaving (logging out, hiding or closing the tab), and what
// they saw here must not count as unread on their other devices.
function flushReads() {
  for (const c of state.convs.values()) flushRead(c, true);
}

// onReadError: a read refused for the moment is sent again later.
function onReadError(f) {
  const { c, prev } = state.readReqs.get(f.id);
  state.readReqs.delete(f.id);
  if (f.code !== 'rate_limited' && f.code !== 'unavailable') {
    console.warn('natter: read refused:', f.code, f.message);
    return;
  }
  if (c.sentRead > prev) c.sentRead = prev;
  setTimeout(() => flushRead(c), retryMs);
}

function onMessage(f) {
  const key = addMessage(f);
  if (!key) return;
  const c = conv(key);
  dropTyping(c, f.from.id);
  const mine = f.from.id === state.me.id;
  // Unread unless the reader sees it come, or the server counted it.
  const open = key === state.current;
  if (!mine && !(open && reading()) && f.seq > Math.max(c.readSeq, c.counted, c.shown)) c.unread++;
  if (!open) {
    if (!mine) announce(t('announce.elsewhere', { name: labelOf(f.from), conv: titleOf(c) }));
    renderSide();
    return;
  }
  const box = $('messages');
  if (!mine) {
    if (!isAtBottom(box)) c.unseen++;
    announce(t('announce', { name: labelOf(f.from), text: f.text.slice(0, 200) }));
  }
  renderSide();
  // Your own message always shows; others' keep the view where it is
  // unless the reader is at the bottom.
  renderMessages(mine ? 'bottom' : 'auto');
}

function onHistory(f) {
  if (f.id) state.historyReqs.delete(f.id);
  const key = keyOf(f.to, null);
  if (!state.convs.has(key)) return; // a room left meanwhile
  const c = conv(key);
  const first = !c.loaded;
  for (const m of f.messages) addMessage(m);
  c.loaded = true;
  c.loading = false;
  c.more = f.more;
  if (c.key !== state.current) return;
  renderSide();
  renderMessages(first ? 'bottom' : 'keep');
  loadOlderIfNeeded();
}

function setConnState(s) {
  state.connState = s;
  const e = $('conn-state');
  e.hidden = false;
  e.dataset.state = s;
  e.textContent = t(`state.${s}`);
  e.title = e.textContent;
}

// ---- online ------------------------------------------------------------------

// Who is online, as the side panel shows it. While few people are online
// (up to the gateway's PRESENCE_LIST_MAX, 200 by default) the server sends
// everyone and the panel lists them all. Beyond that the server's list is
// partial: the user's contacts who are online (the people they talk to
// privately, the members of their rooms) with the total, changes of those
// contacts, and now and then the total again (online_count). The panel
// then shows the total, those contacts under "People you talk to", and a
// search of everyone online (the online request, a page at a time).

// searchDelayMs: the search asks once typing pauses this long; each
// search costs HISTORY_COST of the user's send rate.
const searchDelayMs = 400;
// maxQuery bounds a search text, in characters (chat.MaxRoomQuery).
const maxQuery = 64;

// online is what the page knows of who is online; finder, the search of
// everyone online while the list is partial.
const online = {
  users: new Map(),  // id -> user: everyone online, or (partial) the user's contacts online
  partial: false,    // the server lists only the user's contacts
  total: 0,          // partial: how many are online in all
  gone: new Set(),   // partial: contacts who went offline since the list
};
const finder = {
  query: '',         // what the results are for ('' while not searching)
  users: [],         // the results so far, in the server's order
  total: 0,          // how many match
  more: false, next: 0,
  req: null,         // id of the request under way
  asked: new Map(),  // request id -> {query, offset}, until answered
  timer: null,       // the debounce
  error: '',
  focusNext: false,  // "Show more" was pressed: focus goes to the first of the next page
};

// wireOnline wires the search.
function wireOnline() {
  // Enter searches at once, again if the text is the same (who is online
  // changes); typing searches once it pauses.
  $('online-search').addEventListener('submit', (ev) => { ev.preventDefault(); searchNow(true); });
  $('online-query').maxLength = maxQuery;
  $('online-query').addEventListener('input', () => {
    clearTimeout(finder.timer);
    finder.timer = setTimeout(searchNow, searchDelayMs);
  });
  $('online-query').addEventListener('keydown', (ev) => {
    // Escape empties the search first (and only then closes the drawer).
    if (ev.key !== 'Escape' || $('online-query').value === '') return;
    ev.preventDefault();
    ev.stopPropagation();
    $('online-query').value = '';
    searchNow();
  });
  $('online-more').addEventListener('click', () => {
    finder.focusNext = true;
    askOnline(finder.query, finder.next);
  });
}

// resetOnline forgets everything of the session: a logout, another login.
function resetOnline() {
  online.users = new Map();
  online.partial = false;
  online.total = 0;
  online.gone.clear();
  clearSearch();
}

function clearSearch() {
  clearTimeout(finder.timer);
  Object.assign(finder, { query: '', users: [], total: 0, more: false, next: 0, req: null, error: '', focusNext: false });
  finder.asked.clear();
  $('online-query').value = '';
}

// onPresence takes a presence frame: a list (which always replaces what
// the page had: everyone, or with partial the user's contacts and the
// total) or one user's change.
function onPresence(f) {
  if (Array.isArray(f.users)) {
    online.users = new Map(f.users.map((u) => [u.id, u]));
    online.partial = f.partial === true;
    online.total = online.partial && Number.isFinite(f.total) ? f.total : f.users.length;
    online.gone.clear();
    f.users.forEach(learnName);
    // Everyone is listed again: there is nothing to search.
    if (!online.partial) clearSearch();
  } else if (f.user) {
    if (f.online) {
      online.users.set(f.user.id, f.user);
      online.gone.delete(f.user.id);
      learnName(f.user);
    } else {
      online.users.delete(f.user.id);
      online.gone.add(f.user.id);
    }
  }
}

// onOnlineCount takes the total online, which a partial list's socket
// gets at most once a second (less on a busy gateway). Outside partial
// mode the list is the count.
function onOnlineCount(f) {
  if (!Number.isFinite(f.total)) return;
  online.total = f.total;
  if (online.partial) renderOnlineHead();
}

// onlineUsers is who the page knows to be online: everyone, or while
// the list is partial the user's contacts.
function onlineUsers() { return [...online.users.values()]; }

// isOnline says whether user id is online; fallback is what the caller
// was told (a room's members list) for when the page's list cannot say:
// no list yet, or a partial one that does not know of id.
function isOnline(id, fallback) {
  if (online.users.has(id)) return true;
  if (online.partial) return online.gone.has(id) ? false : fallback;
  return online.users.size > 0 ? false : fallback;
}

// ---- online: search ------------------------------------------------------------

// searchNow searches for what the box holds (again: even if it was the
// last search); an empty box ends the search.
function searchNow(again = false) {
  clearTimeout(finder.timer);
  const query = $('online-query').value.trim();
  if (query === '') {
    clearSearch();
    renderOnline();
    return;
  }
  if (query === finder.query && !again && (finder.req || finder.error === '')) return; // asked already
  finder.users = [];
  finder.more = false;
  askOnline(query, 0);
}

// askOnline asks the gateway for a page of everyone online matching query.
function askOnline(query, offset) {
  const id = `o${++state.reqSeq}`;
  finder.query = query;
  finder.error = '';
  if (!requestLive({ type: 'online', id, query, offset })) {
    finder.req = null;
    finder.error = t('err.offline');
  } else {
    finder.req = id;
    finder.asked.set(id, { query, offset });
  }
  renderOnline();
}

// onOnlineAnswer takes a page of the search; an answer to a search
// overtaken by a newer one is dropped.
function onOnlineAnswer(f) {
  const req = finder.asked.get(f.id);
  if (!req) return;
  finder.asked.delete(f.id);
  if (f.id !== finder.req) return;
  finder.req = null;
  for (const u of f.users) learnName(u);
  const first = req.offset > 0 ? finder.users.length : 0;
  finder.users = req.offset > 0 ? [...finder.users, ...f.users] : f.users;
  finder.total = f.total;
  finder.more = f.more;
  finder.next = f.next;
  renderOnline();
  // After "Show more", focus goes on to what it showed (the button
  // itself may be gone).
  if (finder.focusNext && req.offset > 0) $('online-results').children[first]?.querySelector('button')?.focus();
  finder.focusNext = false;
}

// onOnlineError takes an error frame answering a search; it says whether
// it was one.
function onOnlineError(f) {
  const req = f.id && finder.asked.get(f.id);
  if (!req) return false;
  finder.asked.delete(f.id);
  if (f.id !== finder.req) return true;
  finder.req = null;
  if (f.code === 'rate_limited' || f.code === 'unavailable') {
    // Asked again, unless the search changed meanwhile.
    finder.req = f.id;
    setTimeout(() => { if (finder.req === f.id) askOnline(req.query, req.offset); }, retryMs);
  } else {
    finder.error = has(`err.${f.code}`) ? t(`err.${f.code}`) : (f.message || f.code || '');
  }
  renderOnline();
  return true;
}

// onOnlineLive: the socket is (again) ready; a search it was asked will
// never be answered (or could not be sent): it is asked again.
function onOnlineLive() {
  finder.asked.clear();
  if (finder.query && (finder.req || finder.error)) askOnline(finder.query, finder.users.length > 0 ? finder.next : 0);
  else finder.req = null;
}

// ---- online: rendering ---------------------------------------------------------

function fmtCount(n) { return new Intl.NumberFormat(locale()).format(n); }

// renderOnlineHead is the panel's heading: "Online (3)" while everyone is
// listed, "1,234 online" (the total) while the list is partial.
function renderOnlineHead() {
  if (online.partial) {
    $('online-label').textContent = t('online.total', { n: fmtCount(online.total) });
    $('online-count').textContent = '';
  } else {
    $('online-label').textContent = t('online');
    $('online-count').textContent = `(${online.users.size})`;
  }
}

// renderOnline redraws the panel; focus stays on the button it was on.
function renderOnline() {
  const focused = document.activeElement?.closest?.('#online-list, #online-results') ? document.activeElement.dataset.user : null;
  const searching = online.partial && finder.query !== '';
  renderOnlineHead();
  $('online-search').hidden = !online.partial;
  $('online-contacts-title').hidden = !online.partial || searching;
  $('online-list').hidden = searching;
  $('online-empty').hidden = !online.partial || searching || online.users.size > 0;
  $('online-results').hidden = !searching;
  $('online-more').hidden = !searching || !finder.more;
  $('online-more').disabled = finder.req !== null;
  $('online-status').textContent = searching ? searchStatus() : '';
  const users = onlineUsers().sort((a, b) => (a.name || a.id).localeCompare(b.name || b.id));
  fillPeople($('online-list'), users);
  fillPeople($('online-results'), searching ? finder.users : []);
  if (focused) document.querySelector(`#${searching ? 'online-results' : 'online-list'} .dm[data-user="${CSS.escape(focused)}"]`)?.focus();
}

function searchStatus() {
  if (finder.error) return finder.error;
  if (finder.req && finder.users.length === 0) return t('online.searching');
  if (finder.total === 0) return t('online.none', { query: finder.query });
  return t(finder.total === 1 ? 'online.found.one' : 'online.found', { n: fmtCount(finder.total) });
}

// fillPeople lists users, each with a button opening a private conversation
// (yours says "you" instead).
function fillPeople(list, users) {
  const me = state.me;
  list.replaceChildren();
  for (const u of users) {
    const li = el('li');
    li.dataset.user = u.id;
    const who = el('span', 'person');
    who.append(whoEl(u));
    li.append(who);
    if (me && u.id === me.id) {
      who.append(el('span', 'you', t('you')));
    } else {
      const b = el('button', 'dm', t('dm.button'));
      b.type = 'button';
      b.dataset.user = u.id;
      b.setAttribute('aria-label', t('dm.aria', { name: labelOf(u) }));
      b.addEventListener('click', () => openConv(`user:${u.id}`));
      li.append(b);
    }
    list.append(li);
  }
}

// ---- drawer (phones) -----------------------------------------------------

function setDrawer(open) {
  $('side').classList.toggle('open', open);
  $('scrim').classList.toggle('open', open);
  $('scrim').hidden = !open;
  $('toggle-side').setAttribute('aria-expanded', String(open));
  if (open) $('side').querySelector('button')?.focus();
  else noteShown();
}

function drawerOpen() { return $('side').classList.contains('open'); }

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
  renderMessages('bottom');
}

function updateComposer() {
  const box = $('msg');
  const n = [...box.value].length;
  const counter = $('counter');
  counter.textContent = n > state.maxText * 0.8 ? `${n}/${state.maxText}` : '';
  counter.classList.toggle('over', n > state.maxText);
  $('send').disabled = n > state.maxText || box.value.trim() === '';
  // Grow with the text, up to the CSS max-height (then it scrolls).
  box.style.height = 'auto';
  box.style.height = `${box.scrollHeight + 2}px`;
}

function submitComposer(ev) {
  ev?.preventDefault();
  const box = $('msg');
  // Blank lines at either end are never meant.
  const text = box.value.replace(/^(\s*\n)+/, '').replace(/(\n\s*)+$/, '');
  if (text.trim() === '' || [...text].length > state.maxText) return;
  sendText(text);
  box.value = '';
  updateComposer();
  box.focus();
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

// errorText is what a form shows for an API error: the rule that failed,
// when the server names one.
function errorText(err, retryAfter) {
  switch (err.code) {
    case 'invalid_input': {
      // A password change's fields follow the password rules.
      const field = ['current', 'new'].includes(err.field) ? 'password' : err.field;
      if (!['account', 'password', 'name'].includes(field)) return err.message;
      const rule = `err.${field}.${err.rule}`;
      return err.rule && has(rule) ? t(rule) : t(`err.${field}`);
    }
    case 'rate_limited': return t('err.rate_limited', { s: retryAfter || '60' });
    default: return has(`err.${err.code}`) ? t(`err.${err.code}`) : err.message;
  }
}

function showFormErrors(form, res) {
  for (const p of form.querySelectorAll('.field-error, .form-error')) p.textContent = '';
  for (const i of form.querySelectorAll('input')) i.removeAttribute('aria-invalid');
  const err = res.data?.error;
  if (!err) return;
  const field = err.field && form.querySelector(`.field-error[data-for="${err.field}"]`);
  (field || form.querySelector('.form-error')).textContent = errorText(err, res.retryAfter);
  const input = err.field && form.elements[err.field];
  if (input) { input.setAttribute('aria-invalid', 'true'); input.focus(); }
}

function showView(which) {
  $('auth-view').hidden = which !== 'auth';
  $('chat-view').hidden = which !== 'chat';
  $('logout').hidden = which !== 'chat';
  $('account').hidden = which !== 'chat';
  if (which !== 'chat' && $('account-dialog').open) $('account-dialog').close();
  $('me').hidden = which !== 'chat';
  $('toggle-side').hidden = which !== 'chat';
  if (which !== 'chat') $('conn-state').hidden = true;
}

function startChat(user) {
  state.me = user;
  learnName(user);
  $('me').textContent = user.name;
  for (const c of state.convs.values()) clearTimeout(c.readTimer);
  state.convs.clear();
  state.readReqs.clear();
  state.convReq = null;
  state.convMore = false;
  state.convCursor = 0;
  state.typingSentAt = 0;
  state.current = lobbyKey;
  resetRooms();
  resetOnline();
  showView('chat');
  state.conn = new Connection({
    onFrame,
    onState: setConnState,
    onLive,
    onAck: () => {},
    onSendError: (id, code, message, retryAfter) => {
      for (const c of state.convs.values()) {
        const p = c.pending.get(id);
        if (!p) continue;
        Object.assign(p, { status: 'failed', code, message, retryAfter, failedAt: Date.now() });
        announce(`${t('status.failed')}: ${sendErrorText(p)}`);
      }
      renderMessages();
    },
    onSessionEnd,
  });
  state.conn.connect();
  renderSide();
  renderMessages('bottom');
  $('msg').focus();
}

// onLive: the socket is (again) ready. History requests of a socket that
// dropped will never be answered: they are forgotten, and the open
// conversation loads what it lacks.
function onLive() {
  state.liveAt = Date.now();
  for (const req of state.historyReqs.values()) conv(req.key).loading = false;
  state.historyReqs.clear();
  state.convReq = null;
  onOnlineLive();
  for (const c of state.convs.values()) flushRead(c);
  const c = conv(state.current);
  if (!c.loaded) loadHistory(c);
  else loadOlderIfNeeded();
}

// onSessionEnd: the socket's token was revoked or has expired. After a
// password change (here or in another tab) the cookie holds a fresh
// token: reconnect with it, resuming; otherwise the session is over.
async function onSessionEnd() {
  const conn = state.conn;
  const still = await stillLoggedIn(state.me);
  if (state.conn !== conn) return; // ended meanwhile
  if (still) conn.connect();
  else endSession(t('err.session'));
}

function endSession(message) {
  resetRooms();
  resetOnline();
  // What was typed is not left for whoever logs in next.
  $('msg').value = '';
  updateComposer();
  state.conn?.stop();
  state.conn = null;
  state.me = null;
  setDrawer(false);
  document.title = 'natter';
  showView('auth');
  if (message) $('login-form').querySelector('.form-error').textContent = message;
  $('login-account').focus();
}

// ---- wiring -----------------------------------------------------------------

function onLangChange(e) {
  setLang(e.target.value);
  if (!state.me) return;
  renderSide();
  renderMessages('keep');
  renderTyping();
  renderPanel();
  if (state.connState) setConnState(state.connState);
}

function wireForms() {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    try {
      const res = await api('/api/login', { account: form.account.value, password: form.password.value });
      showFormErrors(form, res);
      if (res.status === 200) { form.reset(); startChat(res.data.user); }
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
    flushReads();
    try { await api('/api/logout', {}); } catch { /* the cookie expires anyway */ }
    endSession('');
  });
}

function wireChat() {
  $('composer').addEventListener('submit', submitComposer);
  $('msg').addEventListener('input', () => { updateComposer(); noteTyping(); });
  $('msg').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) submitComposer(ev);
  });
  const box = $('messages');
  box.addEventListener('scroll', () => {
    const c = conv(state.current);
    if (c.unseen > 0 && isAtBottom(box)) { c.unseen = 0; renderJump(); }
    loadOlderIfNeeded();
    noteShown();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') noteShown();
    else flushReads();
  });
  window.addEventListener('pagehide', flushReads);
  stickToBottom(box);
  $('jump').addEventListener('click', () => { renderMessages('bottom'); $('msg').focus(); });
  $('toggle-side').addEventListener('click', () => setDrawer(!drawerOpen()));
  $('room-info').addEventListener('click', () => openRoomPanel(conv(state.current)));
  $('scrim').addEventListener('click', () => setDrawer(false));
  document.addEventListener('keydown', (ev) => {
    // A dialog over the drawer closes by itself, and only it.
    if (ev.key === 'Escape' && drawerOpen() && !document.querySelector('dialog[open]')) { setDrawer(false); $('toggle-side').focus(); }
  });
}

// trackViewport sizes the shell to the visual viewport, so a phone's
// on-screen keyboard shrinks it (where the browser does not itself).
function trackViewport() {
  const vv = window.visualViewport;
  if (!vv) return;
  const set = () => {
    if (Math.abs(vv.scale - 1) > 0.01) return; // zoomed: leave the layout be
    document.documentElement.style.setProperty('--app-height', `${vv.height}px`);
  };
  vv.addEventListener('resize', set);
  set();
}

async function boot() {
  applyStatic();
  trackViewport();
  $('lang').value = currentLang();
  $('lang').addEventListener('change', onLangChange);
  wireForms();
  wireChat();
  wireAccount({ api, showFormErrors, errorText, currentUser: () => state.me, endSession });
  wireRooms({
    request: requestLive,
    nextID: (prefix) => `${prefix}${++state.reqSeq}`,
    me: () => state.me,
    conv: (room) => state.convs.get(`room:${room}`),
    addRoom,
    openConv,
    people,
    isOnline,
    learn: learnName,
    el, whoEl, labelOf, announce, locale,
  });
  wireOnline();
  updateComposer();

  // Still logged in (the cookie) after a reload? /api/session answers 200
  // either way, so a logged-out load logs no failed request.
  try {
    const r = await fetch('/api/session');
    if (r.ok) {
      const { user } = await r.json();
      if (user) { startChat(user); return; }
    }
  } catch { /* show the forms */ }
  showView('auth');
}

boot();
