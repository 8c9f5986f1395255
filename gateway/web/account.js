// The account dialog: change the password, or log out everywhere. Both
// revoke every token of the user (auth's /api/password and
// /api/logout-all), so every socket of theirs is closed with 4001, this
// page's too; after a password change this browser holds a fresh cookie
// and reconnects (see stillLoggedIn), after logging out everywhere it
// shows the login form.

import { t } from './i18n.js';

const $ = (id) => document.getElementById(id);

// wireAccount wires the dialog. deps: api(path, body) -> {status, data,
// retryAfter}; showFormErrors(form, res); errorText(err, retryAfter);
// currentUser() -> the logged-in user; endSession(message).
export function wireAccount(deps) {
  const dialog = $('account-dialog');
  $('account').addEventListener('click', () => openAccount(deps.currentUser()));
  $('account-close').addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => resetAccount());
  $('password-form').addEventListener('submit', (ev) => changePassword(ev, deps));
  $('logout-all').addEventListener('click', () => logoutEverywhere(deps));
}

function openAccount(user) {
  resetAccount();
  $('password-username').value = user?.account || '';
  $('account-id').textContent = user?.id || '';
  $('account-dialog').showModal();
  $('password-current').focus();
}

function resetAccount() {
  const form = $('password-form');
  form.reset();
  for (const p of form.querySelectorAll('.field-error, .form-error, .form-done')) p.textContent = '';
  for (const i of form.querySelectorAll('input')) i.removeAttribute('aria-invalid');
  $('logout-all-error').textContent = '';
}

// pendingChange is this page's password change under way, if any (see
// stillLoggedIn).
let pendingChange = null;

async function changePassword(ev, deps) {
  ev.preventDefault();
  const form = ev.target;
  const done = form.querySelector('.form-done');
  done.textContent = '';
  let res;
  const change = deps.api('/api/password', { current: form.current.value, new: form.new.value });
  pendingChange = change;
  try {
    res = await change;
  } catch {
    form.querySelector('.form-error').textContent = t('err.network');
    return;
  } finally {
    if (pendingChange === change) pendingChange = null;
  }
  if (res.status === 401) { closeAndEnd(deps, t('err.session')); return; }
  deps.showFormErrors(form, res);
  if (res.status !== 200) return;
  form.reset();
  done.textContent = t('password.done');
}

async function logoutEverywhere(deps) {
  const out = $('logout-all-error');
  out.textContent = '';
  let res;
  try {
    res = await deps.api('/api/logout-all', {});
  } catch {
    out.textContent = t('err.network');
    return;
  }
  if (res.status === 200) closeAndEnd(deps, t('logoutAll.done'));
  else if (res.status === 401) closeAndEnd(deps, t('err.session'));
  else out.textContent = deps.errorText(res.data?.error || {}, res.retryAfter);
}

function closeAndEnd(deps, message) {
  $('account-dialog').close();
  deps.endSession(message);
}

// stillLoggedIn says whether this browser is still logged in as user
// after its socket was closed as revoked: a password change, here or in
// another tab, revoked the socket's token but left a fresh one in the
// cookie, and the socket should reconnect with it; logging out, here or
// everywhere, did not. The revocation can reach the socket before the
// change's answer, which carries the fresh cookie, reaches the page: a
// change made here is waited for, and one made in another tab is given
// revocationGraceMs before the session is taken as over.
export async function stillLoggedIn(user) {
  if (pendingChange) await pendingChange.catch(() => {});
  if (await sessionIs(user)) return true;
  await new Promise((resolve) => setTimeout(resolve, revocationGraceMs));
  return sessionIs(user);
}

const revocationGraceMs = 1000;

async function sessionIs(user) {
  try {
    const r = await fetch('/api/session');
    if (!r.ok) return false;
    const { user: now } = await r.json();
    return Boolean(now && user && now.id === user.id);
  } catch {
    return false;
  }
}
