// Interface text in English and Simplified Chinese. The language comes
// from the browser, or from the switch (remembered in localStorage).

const strings = {
  en: {
    'logout': 'Log out',
    'language': 'Language',
    'messages': 'Messages',
    'composer.label': 'Message (Enter sends, Shift+Enter adds a line)',
    'lobby.sub': 'Everyone can read this room',
    'dm.sub': 'Private conversation with {name} (@{account})',
    'dm.sub.noaccount': 'Private conversation with {name}',
    'dm.button': 'Message',
    'dm.aria': 'Send {name} a private message',
    'private': 'private',
    'jump.one': '1 new message',
    'jump.many': '{n} new messages',
    'start': 'This is the start of the conversation.',
    'announce': '{name}: {text}',
    'announce.elsewhere': 'New message from {name} in {conv}',
    'unread.aria': '{n} unread',
    'err.account.required': 'Required.',
    'err.account.length': '3 to 32 characters.',
    'err.account.charset': 'Only letters, digits, ".", "_" and "-".',
    'err.name.required': 'Required.',
    'err.name.length': '1 to 32 characters.',
    'err.name.utf8': 'Use ordinary characters.',
    'err.name.printable': 'Only printable characters.',
    'err.password.required': 'Required.',
    'err.password.length': '8 to 128 characters.',
    'err.password.common': 'This password is too common. Choose another.',
    'err.password.same_as_account': 'The password must differ from the account name.',
    'login.title': 'Log in',
    'login.submit': 'Log in',
    'register.title': 'New here? Register',
    'register.submit': 'Register',
    'register.done': 'Registered. You can log in now.',
    'field.account': 'Account',
    'field.password': 'Password',
    'field.name': 'Display name',
    'menu': 'Conversations',
    'conversations': 'Conversations',
    'online': 'Online',
    'lobby': 'Lobby',
    'you': 'you',
    'send': 'Send',
    'composer.placeholder': 'Write a message…',
    'state.connected': 'connected',
    'state.reconnecting': 'reconnecting…',
    'state.offline': 'offline',
    'status.pending': 'sending…',
    'status.failed': 'not sent',
    'retry': 'Retry',
    'today': 'Today',
    'yesterday': 'Yesterday',
    'older': 'Loading older messages…',
    'err.account_taken': 'This account name is taken.',
    'err.bad_credentials': 'Account or password is wrong.',
    'err.rate_limited': 'Too many attempts. Try again in {s} seconds.',
    'err.unavailable': 'The service is unavailable. Try again shortly.',
    'err.busy': 'The server is busy. Try again shortly.',
    'err.network': 'Cannot reach natter. Check your connection.',
    'err.account': '3 to 32 letters, digits, ".", "_" or "-".',
    'err.password': '8 to 128 characters, not a common password, not your account name.',
    'err.name': '1 to 32 printable characters.',
    'err.required': 'Required.',
    'err.session': 'Your session ended. Please log in again.',
    'err.text_too_long': 'The message is too long.',
    'err.name.control': 'No line breaks, tabs or other control characters.',
    'err.name.bidi': 'No characters that change the direction of text.',
    'err.name.invisible': 'No invisible characters (such as zero-width spaces).',
    'err.name.at_sign': 'No "@": the page shows your account as @handle.',
    'err.name.label': 'No labels the page uses, such as "(you)".',
    'account': 'Account',
    'close': 'Close',
    'password.title': 'Change password',
    'password.submit': 'Change password',
    'password.done': 'Password changed. Every other session was logged out.',
    'field.current': 'Current password',
    'field.new': 'New password',
    'logoutAll.title': 'Log out everywhere',
    'logoutAll.text': 'Ends every session of your account, on every device, this one included.',
    'logoutAll.submit': 'Log out everywhere',
    'logoutAll.done': 'You were logged out everywhere.',
    'err.wrong_password': 'The current password is wrong.',
    'seen': 'Seen',
    'seen.by': 'Seen by {name}',
    'conv.more': 'Show older conversations',
    'conv.loading': 'Loading older conversations…',
    'err.quota_exceeded': 'You have sent as much as one person may for now. You can send again at {time}.',
    'err.quota_exceeded.later': 'You have sent as much as one person may for now. Try again later.',
    'err.unknown_recipient': 'This person has no account here.',
    'err.empty_text': 'The message is empty.',
  },
  zh: {
    'logout': '退出',
    'language': '语言',
    'messages': '消息',
    'composer.label': '消息（回车发送，Shift+回车换行）',
    'lobby.sub': '所有人都能看到这个房间',
    'dm.sub': '与 {name}（@{account}）的私聊',
    'dm.sub.noaccount': '与 {name} 的私聊',
    'dm.button': '私聊',
    'dm.aria': '给 {name} 发私信',
    'private': '私聊',
    'jump.one': '1 条新消息',
    'jump.many': '{n} 条新消息',
    'start': '这是会话的开始。',
    'announce': '{name}：{text}',
    'announce.elsewhere': '{name} 在 {conv} 发来新消息',
    'unread.aria': '{n} 条未读',
    'err.account.required': '必填。',
    'err.account.length': '3 到 32 个字符。',
    'err.account.charset': '只能使用字母、数字、"."、"_" 和 "-"。',
    'err.name.required': '必填。',
    'err.name.length': '1 到 32 个字符。',
    'err.name.utf8': '请使用常规字符。',
    'err.name.printable': '只能使用可显示字符。',
    'err.password.required': '必填。',
    'err.password.length': '8 到 128 个字符。',
    'err.password.common': '这个密码太常见了，请换一个。',
    'err.password.same_as_account': '密码不能与账号相同。',
    'login.title': '登录',
    'login.submit': '登录',
    'register.title': '新用户？注册',
    'register.submit': '注册',
    'register.done': '注册成功，现在可以登录了。',
    'field.account': '账号',
    'field.password': '密码',
    'field.name': '昵称',
    'menu': '会话',
    'conversations': '会话',
    'online': '在线',
    'lobby': '大厅',
    'you': '你',
    'send': '发送',
    'composer.placeholder': '输入消息…',
    'state.connected': '已连接',
    'state.reconnecting': '正在重连…',
    'state.offline': '离线',
    'status.pending': '发送中…',
    'status.failed': '未发送',
    'retry': '重试',
    'today': '今天',
    'yesterday': '昨天',
    'older': '正在加载更早的消息…',
    'err.account_taken': '该账号已被使用。',
    'err.bad_credentials': '账号或密码错误。',
    'err.rate_limited': '尝试次数过多，请 {s} 秒后再试。',
    'err.unavailable': '服务暂不可用，请稍后再试。',
    'err.busy': '服务器繁忙，请稍后再试。',
    'err.network': '无法连接 natter，请检查网络。',
    'err.account': '3 到 32 个字母、数字、"."、"_" 或 "-"。',
    'err.password': '8 到 128 个字符，不能是常见密码，不能与账号相同。',
    'err.name': '1 到 32 个可显示字符。',
    'err.required': '必填。',
    'err.session': '会话已结束，请重新登录。',
    'err.text_too_long': '消息太长。',
    'err.name.control': '不能包含换行、制表符等控制字符。',
    'err.name.bidi': '不能包含改变文字方向的字符。',
    'err.name.invisible': '不能包含不可见字符（如零宽空格）。',
    'err.name.at_sign': '不能包含 "@"：页面用 @账号 显示你的账号。',
    'err.name.label': '不能包含页面使用的标签，如"（你）"。',
    'account': '账户',
    'close': '关闭',
    'password.title': '修改密码',
    'password.submit': '修改密码',
    'password.done': '密码已修改，其他所有会话均已退出。',
    'field.current': '当前密码',
    'field.new': '新密码',
    'logoutAll.title': '在所有设备上退出',
    'logoutAll.text': '结束你的账户在所有设备上的全部会话，包括当前这个。',
    'logoutAll.submit': '在所有设备上退出',
    'logoutAll.done': '已在所有设备上退出。',
    'err.wrong_password': '当前密码错误。',
    'seen': '已读',
    'seen.by': '{name} 已读',
    'conv.more': '显示更早的会话',
    'conv.loading': '正在加载更早的会话…',
    'err.quota_exceeded': '你暂时已达到发送上限，{time} 后可以再次发送。',
    'err.quota_exceeded.later': '你暂时已达到发送上限，请稍后再试。',
    'err.unknown_recipient': '此用户在这里没有账号。',
    'err.empty_text': '消息是空的。',
  },
};

let lang = pick();

function pick() {
  const saved = localStorage.getItem('natter.lang');
  if (saved && strings[saved]) return saved;
  const nav = (navigator.languages || [navigator.language || 'en'])[0].toLowerCase();
  return nav.startsWith('zh') ? 'zh' : 'en';
}

export function currentLang() { return lang; }

export function setLang(l) {
  if (!strings[l]) return;
  lang = l;
  localStorage.setItem('natter.lang', l);
  applyStatic();
}

// has says whether key has a text (in English, the fallback).
export function has(key) { return key in strings.en; }

// t returns the text of key, with {name} placeholders filled from params.
export function t(key, params = {}) {
  const s = strings[lang][key] ?? strings.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(params[k] ?? ''));
}

// applyStatic translates the page's fixed text and accessible names.
export function applyStatic() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
  for (const el of document.querySelectorAll('[data-i18n-aria]')) el.setAttribute('aria-label', t(el.dataset.i18nAria));
}

// missingKeys lists, per language, the keys the other language has and
// it lacks, and the page's data-i18n keys no language has (the browser
// test checks both are empty).
export function missingKeys() {
  const out = {};
  for (const l of Object.keys(strings)) {
    const others = Object.keys(strings).filter((o) => o !== l).flatMap((o) => Object.keys(strings[o]));
    out[l] = [...new Set(others)].filter((k) => !(k in strings[l]));
  }
  const used = [...document.querySelectorAll('[data-i18n],[data-i18n-placeholder],[data-i18n-aria]')]
    .flatMap((el) => [el.dataset.i18n, el.dataset.i18nPlaceholder, el.dataset.i18nAria]).filter(Boolean);
  out.page = [...new Set(used)].filter((k) => !(k in strings.en));
  return out;
}
