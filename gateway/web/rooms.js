// Rooms beyond the lobby: create one, find public ones (and private ones
// you were invited to) and join, a room's panel (its members, invite
// someone, leave), and invitations to you. The conversation list and a
// room's messages are app.js's; this module owns the dialogs, the
// invitation notices and the requests they make. Everything is put in
// the page as text.

import { t, has } from './i18n.js';
import { retryAfterOf } from './conn.js';

const $ = (id) => document.getElementById(id);
// maxRoomName bounds a room's name, in characters (chat.MaxRoomName).
const maxRoomName = 64;
// searchDelayMs: the search box asks once typing pauses this long.
const searchDelayMs = 300;
// retryMs: a request refused for the moment (rate_limited, unavailable)
// is sent again after this.
const retryMs = 2000;

let d = null;              // what app.js lends: see wireRooms
const reqs = new Map();    // request id -> {kind, ...}, until answered
const joining = new Map(); // room id -> where the join was asked ('browse' | 'notice')
const notices = new Map(); // room id -> {room, by, error}
const browse = { query: '', rooms: [], more: false, next: 0, req: null, timer: null, errors: new Map() };
const panel = { room: null, members: [], total: 0, more: false, next: 0, req: null, invited: new Set() };

// wireRooms wires the dialogs. deps: request(frame) -> whether it went
// (the socket is live); nextID(prefix); me(); conv(roomID) -> the room's
// conversation or undefined; openConv(key); people() -> users worth
// inviting (online, or a private conversation); el, whoEl, labelOf,
// announce, locale().
export function wireRooms(deps) {
  d = deps;
  $('new-room').addEventListener('click', openNewRoom);
  $('new-room-close').addEventListener('click', () => $('new-room-dialog').close());
  $('new-room-form').addEventListener('submit', createRoom);
  $('browse-rooms').addEventListener('click', openBrowse);
  $('browse-close').addEventListener('click', () => $('browse-dialog').close());
  $('browse-form').addEventListener('submit', (ev) => { ev.preventDefault(); search(); });
  $('browse-query').addEventListener('input', () => {
    clearTimeout(browse.timer);
    browse.timer = setTimeout(search, searchDelayMs);
  });
  $('browse-more').addEventListener('click', () => askRooms(browse.query, browse.next));
  $('room-close').addEventListener('click', () => $('room-dialog').close());
  $('members-more').addEventListener('click', () => askMembers(panel.next));
  $('invite-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const id = $('invite-user').value.trim();
    if (id === '') { $('invite-error').textContent = t('err.required'); $('invite-user').focus(); return; }
    invite(id);
  });
  $('leave-room').addEventListener('click', leave);
  $('room-dialog').addEventListener('close', () => { panel.room = null; panel.req = null; });
}

// resetRooms forgets everything of the session: a logout, another login.
export function resetRooms() {
  reqs.clear();
  joining.clear();
  notices.clear();
  clearTimeout(browse.timer);
  for (const id of ['new-room-dialog', 'browse-dialog', 'room-dialog']) if ($(id).open) $(id).close();
  renderNotices();
}

// onRoomFrame takes the answers to this module's requests, and
// invitations; it says whether the frame was one.
export function onRoomFrame(f) {
  switch (f.type) {
    case 'room': onCreated(f); return true;
    case 'rooms': onRooms(f); return true;
    case 'members': onMembers(f); return true;
    case 'invited': onInvited(f); return true;
  }
  return false;
}

// onRoomError takes an error frame answering one of this module's
// requests; it says whether it was one.
export function onRoomError(f) {
  const req = f.id && reqs.get(f.id);
  if (!req) return false;
  reqs.delete(f.id);
  const later = f.code === 'rate_limited' || f.code === 'unavailable';
  switch (req.kind) {
    case 'create':
      $('new-room-submit').disabled = false;
      if (f.code === 'bad_name') fieldError(t('err.bad_name'));
      else $('new-room-form').querySelector('.form-error').textContent = errorText(f);
      break;
    case 'rooms':
      if (f.id !== browse.req) break;
      browse.req = null;
      if (later) setTimeout(() => { if ($('browse-dialog').open && !browse.req) askRooms(req.query, req.offset); }, retryMs);
      else setStatus('browse-status', errorText(f));
      break;
    case 'members':
      if (f.id !== panel.req) break;
      panel.req = null;
      if (later) setTimeout(() => { if (panel.room === req.room && !panel.req) askMembers(req.offset); }, retryMs);
      else setStatus('members-status', errorText(f));
      break;
    case 'join': {
      joining.delete(req.room);
      const text = f.code === 'unknown_room' ? t('err.unknown_room.join') : errorText(f);
      if (notices.has(req.room)) notices.get(req.room).error = text;
      else browse.errors.set(req.room, text);
      renderNotices();
      renderBrowse();
      break;
    }
    case 'invite':
      panel.invited.delete(req.user);
      $('invite-done').textContent = '';
      $('invite-error').textContent = f.code === 'unknown_recipient' || f.code === 'bad_id'
        ? t('err.unknown_recipient') : errorText(f, 'invite');
      renderInvitePeople();
      break;
    case 'leave':
      $('leave-room').disabled = false;
      $('leave-error').textContent = errorText(f);
      break;
  }
  return true;
}

// errorText is what the page says of a refused room request. A spent
// quota (rooms created, invites sent per hour) says when it comes back,
// as a time of day, from the frame's retry_after.
function errorText(f, kind = 'room') {
  if (f.code === 'quota_exceeded') {
    const quota = kind === 'invite' ? 'err.invite_quota' : 'err.room_quota';
    const wait = retryAfterOf(f);
    if (wait === null) return t(`${quota}.later`);
    const at = new Date(Date.now() + wait * 1000);
    return t(quota, { time: at.toLocaleTimeString(d.locale(), { hour: '2-digit', minute: '2-digit' }) });
  }
  if (f.code === 'rate_limited') return t('err.room_rate');
  return has(`err.${f.code}`) ? t(`err.${f.code}`) : (f.message || f.code || '');
}

function setStatus(id, text) { $(id).textContent = text; }

function send(kind, frame, extra = {}) {
  const id = d.nextID('q');
  if (!d.request({ ...frame, id })) return null;
  reqs.set(id, { kind, ...extra });
  return id;
}

// ---- new room ----------------------------------------------------------

function openNewRoom() {
  const form = $('new-room-form');
  form.reset();
  for (const p of form.querySelectorAll('.field-error, .form-error')) p.textContent = '';
  $('new-room-name').removeAttribute('aria-invalid');
  $('new-room-submit').disabled = false;
  $('new-room-dialog').showModal();
  $('new-room-name').focus();
}

function fieldError(text) {
  $('new-room-name-error').textContent = text;
  $('new-room-name').setAttribute('aria-invalid', 'true');
  $('new-room-name').focus();
}

function createRoom(ev) {
  ev.preventDefault();
  const form = ev.target;
  for (const p of form.querySelectorAll('.field-error, .form-error')) p.textContent = '';
  $('new-room-name').removeAttribute('aria-invalid');
  const name = form.name.value.trim();
  const n = [...name].length;
  if (n === 0) { fieldError(t('err.required')); return; }
  if (n > maxRoomName || /\p{Cc}/u.test(name)) { fieldError(t('err.bad_name')); return; }
  const visibility = form.visibility.value;
  if (!send('create', { type: 'room_create', name, visibility })) {
    form.querySelector('.form-error').textContent = t('err.offline');
    return;
  }
  $('new-room-submit').disabled = true;
}

function onCreated(f) {
  if (!f.id || !reqs.has(f.id)) return;
  reqs.delete(f.id);
  $('new-room-submit').disabled = false;
  $('new-room-dialog').close();
  d.addRoom(f.room);
  d.openConv(`room:${f.room.id}`);
  d.announce(t('room.created', { name: f.room.name }));
}

// ---- browse -------------------------------------------------------------

function openBrowse() {
  $('browse-query').value = '';
  browse.errors.clear();
  $('browse-dialog').showModal();
  $('browse-query').focus();
  search();
}

function search() {
  clearTimeout(browse.timer);
  browse.errors.clear();
  askRooms($('browse-query').value.trim(), 0);
}

function askRooms(query, offset) {
  const id = send('rooms', { type: 'rooms', query, offset }, { query, offset });
  browse.req = id;
  if (!id) { setStatus('browse-status', t('err.offline')); return; }
  browse.query = query;
  setStatus('browse-status', t('rooms.searching'));
  $('browse-more').disabled = true;
}

function onRooms(f) {
  const req = reqs.get(f.id);
  if (!req) return;
  reqs.delete(f.id);
  if (f.id !== browse.req) return; // a newer search is under way
  browse.req = null;
  browse.rooms = req.offset > 0 ? [...browse.rooms, ...f.rooms] : f.rooms;
  browse.more = f.more;
  browse.next = f.next;
  renderBrowse();
  const n = browse.rooms.length;
  setStatus('browse-status', n === 0
    ? (browse.query ? t('rooms.none.query', { query: browse.query }) : t('rooms.none'))
    : t(n === 1 ? 'rooms.found.one' : 'rooms.found', { n }));
}

function renderBrowse() {
  if (!d) return;
  const list = $('browse-list');
  const focused = document.activeElement?.closest?.('#browse-list li')?.dataset.room;
  list.replaceChildren();
  for (const r of browse.rooms) {
    const li = d.el('li', 'room-item');
    li.dataset.room = r.id;
    const main = d.el('div', 'room-main');
    main.append(d.el('bdi', 'room-name', r.name));
    const meta = d.el('span', 'room-meta', roomMeta(r));
    main.append(meta);
    if (r.invited) main.append(d.el('span', 'badge', t('rooms.invited')));
    const err = browse.errors.get(r.id);
    if (err) main.append(d.el('span', 'form-error', err));
    li.append(main);
    const member = Boolean(d.conv(r.id));
    const b = d.el('button', member ? 'join open' : 'join', t(member ? 'rooms.open' : joining.has(r.id) ? 'rooms.joining' : 'rooms.join'));
    b.type = 'button';
    b.disabled = joining.has(r.id);
    b.setAttribute('aria-label', t(member ? 'rooms.open.aria' : 'rooms.join.aria', { name: r.name }));
    b.addEventListener('click', () => {
      if (member) { $('browse-dialog').close(); d.openConv(`room:${r.id}`); } else join(r.id, 'browse');
    });
    li.append(b);
    list.append(li);
  }
  $('browse-more').hidden = !browse.more;
  $('browse-more').disabled = browse.req !== null;
  if (focused) list.querySelector(`li[data-room="${CSS.escape(focused)}"] button`)?.focus();
}

function roomMeta(r) {
  const count = t(r.members === 1 ? 'room.count.one' : 'room.count', { n: r.members });
  return r.visibility === 'private' ? `${t('visibility.private')} · ${count}` : count;
}

function join(room, from) {
  browse.errors.delete(room);
  if (notices.has(room)) notices.get(room).error = '';
  if (!send('join', { type: 'join', room }, { room })) {
    const text = t('err.offline');
    if (from === 'notice') notices.get(room).error = text; else browse.errors.set(room, text);
  } else {
    joining.set(room, from);
  }
  renderBrowse();
  renderNotices();
}

// roomJoined: this user is in room now (asked here, on another device,
// or a room they created). A join asked here opens the room.
export function roomJoined(room) {
  const asked = joining.has(room.id);
  joining.delete(room.id);
  notices.delete(room.id);
  renderNotices();
  const i = browse.rooms.findIndex((r) => r.id === room.id);
  if (i >= 0) browse.rooms[i] = { ...browse.rooms[i], members: room.members, invited: false };
  renderBrowse();
  if (asked) {
    if ($('browse-dialog').open) $('browse-dialog').close();
    d.openConv(`room:${room.id}`);
    d.announce(t('room.joined', { name: room.name }));
  }
}

// roomLeft: this user left room (here or on another device).
export function roomLeft(room) {
  if (panel.room === room.id && $('room-dialog').open) $('room-dialog').close();
  const i = browse.rooms.findIndex((r) => r.id === room.id);
  if (i >= 0) browse.rooms[i] = { ...browse.rooms[i], members: room.members };
  renderBrowse();
}

// ---- a room's panel: members, invite, leave --------------------------------

// openRoomPanel shows the open room's panel.
export function openRoomPanel(c) {
  panel.room = c.room?.id || c.to.room;
  panel.members = [];
  panel.total = c.room?.members || 0;
  panel.more = false;
  panel.invited = new Set();
  $('invite-user').value = '';
  for (const id of ['invite-error', 'invite-done', 'leave-error', 'members-status']) $(id).textContent = '';
  $('leave-room').disabled = false;
  renderPanel();
  $('room-dialog').showModal();
  // Focus on the title, not on a button Enter would press.
  $('room-dialog-title').focus();
  askMembers(0);
}

// renderPanel redraws the open panel (names learned, presence changed,
// the room renamed or recounted).
export function renderPanel() {
  if (!d || !panel.room) return;
  const c = d.conv(panel.room);
  const room = c?.room || { id: panel.room, name: '', members: panel.total };
  $('room-dialog-title').textContent = room.name || t('room.unknown');
  $('room-dialog-sub').textContent = `${t(room.visibility === 'private' ? 'room.kind.private' : 'room.kind.public')} · ${t(room.members === 1 ? 'room.count.one' : 'room.count', { n: room.members })}`;
  $('leave-hint').textContent = t(room.visibility === 'private' ? 'room.leave.private' : 'room.leave.public');
  renderMembers();
  renderInvitePeople();
}

function askMembers(offset) {
  const id = send('members', { type: 'members', room: panel.room, offset }, { room: panel.room, offset });
  panel.req = id;
  if (!id) { setStatus('members-status', t('err.offline')); return; }
  setStatus('members-status', t('members.loading'));
  $('members-more').disabled = true;
}

function onMembers(f) {
  const req = reqs.get(f.id);
  if (!req) return;
  reqs.delete(f.id);
  if (f.id !== panel.req || f.room !== panel.room) return;
  panel.req = null;
  for (const m of f.members) d.learn(m.user);
  panel.members = req.offset > 0 ? [...panel.members, ...f.members] : f.members;
  panel.total = f.total;
  panel.more = f.more;
  panel.next = f.next;
  setStatus('members-status', '');
  renderMembers();
  renderInvitePeople();
}

function renderMembers() {
  const list = $('members-list');
  const me = d.me();
  list.replaceChildren();
  for (const m of panel.members) {
    const li = d.el('li', 'member');
    li.dataset.user = m.user.id;
    const online = d.isOnline(m.user.id, m.online);
    li.append(d.el('span', online ? 'dot on' : 'dot', ''));
    li.append(d.whoEl(m.user));
    li.append(d.el('span', 'sr-only', t(online ? 'member.online' : 'member.offline')));
    if (m.owner) li.append(d.el('span', 'badge', t('member.owner')));
    if (me && m.user.id === me.id) li.append(d.el('span', 'you', t('you')));
    list.append(li);
  }
  $('members-title').textContent = `${t('room.members')} (${panel.total})`;
  $('members-more').hidden = !panel.more;
  $('members-more').disabled = panel.req !== null;
}

// roomMember: someone joined or left a room this user is in.
export function roomMember(f) {
  if (f.room !== panel.room) return;
  panel.total = f.members;
  const i = panel.members.findIndex((m) => m.user.id === f.user.id);
  if (f.joined && i < 0 && !panel.more) panel.members.push({ user: f.user, online: true });
  if (!f.joined && i >= 0) panel.members.splice(i, 1);
  if (f.joined) panel.invited.delete(f.user.id);
  renderPanel();
}

function renderInvitePeople() {
  const list = $('invite-people');
  const me = d.me();
  const members = new Set(panel.members.map((m) => m.user.id));
  const focused = document.activeElement?.closest?.('#invite-people li')?.dataset.user;
  list.replaceChildren();
  for (const u of d.people()) {
    if (!me || u.id === me.id || members.has(u.id)) continue;
    const li = d.el('li', 'member');
    li.dataset.user = u.id;
    li.append(d.whoEl(u));
    const done = panel.invited.has(u.id);
    const b = d.el('button', 'dm', t(done ? 'invite.sent' : 'invite.submit'));
    b.type = 'button';
    b.disabled = done;
    b.setAttribute('aria-label', t(done ? 'invite.sent.aria' : 'invite.aria', { name: d.labelOf(u) }));
    b.addEventListener('click', () => invite(u.id));
    li.append(b);
    list.append(li);
  }
  $('invite-user-label').textContent = t(list.childElementCount > 0 ? 'field.userId' : 'field.userId.only');
  if (focused) list.querySelector(`li[data-user="${CSS.escape(focused)}"] button`)?.focus();
}

function invite(user) {
  $('invite-error').textContent = '';
  $('invite-done').textContent = '';
  if (!send('invite', { type: 'invite', room: panel.room, user }, { user })) {
    $('invite-error').textContent = t('err.offline');
    return;
  }
  panel.invited.add(user);
  renderInvitePeople();
}

function leave() {
  $('leave-error').textContent = '';
  if (!send('leave', { type: 'leave', room: panel.room }, { room: panel.room })) {
    $('leave-error').textContent = t('err.offline');
    return;
  }
  $('leave-room').disabled = true;
}

// ---- invitations ---------------------------------------------------------------

function onInvited(f) {
  if (f.id && reqs.has(f.id)) {
    // The invite this page made went out.
    reqs.delete(f.id);
    if (f.user) {
      d.learn(f.user);
      panel.invited.add(f.user.id);
      $('invite-done').textContent = t('invite.done', { name: d.labelOf(f.user), room: f.room.name });
      $('invite-user').value = '';
    }
    renderInvitePeople();
    return;
  }
  if (!f.by) return;
  // Someone invited this user.
  d.learn(f.by);
  if (d.conv(f.room.id)) return; // in it already
  notices.set(f.room.id, { room: f.room, by: f.by, error: '' });
  renderNotices();
  d.announce(t('invited.text', { name: d.labelOf(f.by), room: f.room.name }));
}

function renderNotices() {
  const box = $('notices');
  if (!d) return;
  const focused = document.activeElement?.closest?.('#notices .notice');
  const focusRoom = focused?.dataset.room;
  const focusJoin = document.activeElement?.classList.contains('join');
  box.replaceChildren();
  for (const n of notices.values()) {
    const e = d.el('div', 'notice');
    e.dataset.room = n.room.id;
    const p = d.el('p', 'notice-text');
    p.append(d.whoEl(n.by), document.createTextNode(` ${t('invited.middle')} `), d.el('bdi', 'room-name', n.room.name));
    if (t('invited.end')) p.append(document.createTextNode(t('invited.end')));
    e.append(p);
    if (n.error) e.append(d.el('p', 'form-error', n.error));
    const actions = d.el('div', 'notice-actions');
    const j = d.el('button', 'join', t(joining.has(n.room.id) ? 'rooms.joining' : 'rooms.join'));
    j.type = 'button';
    j.disabled = joining.has(n.room.id);
    j.setAttribute('aria-label', t('rooms.join.aria', { name: n.room.name }));
    j.addEventListener('click', () => join(n.room.id, 'notice'));
    const x = d.el('button', 'dismiss', t('dismiss'));
    x.type = 'button';
    x.setAttribute('aria-label', t('dismiss.aria', { name: n.room.name }));
    x.addEventListener('click', () => {
      notices.delete(n.room.id);
      renderNotices();
      $('msg').focus();
    });
    actions.append(j, x);
    e.append(actions);
    box.append(e);
  }
  if (focusRoom) box.querySelector(`.notice[data-room="${CSS.escape(focusRoom)}"] ${focusJoin ? '.join' : '.dismiss'}`)?.focus();
}
