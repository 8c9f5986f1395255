// Interface text in English and Simplified Chinese. The language comes
// from the browser, or from the switch (remembered in localStorage).

const strings = {
  en: {
    'logout': 'Log out',
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
    'lobby': 'Lobby (everyone)',
    'you': '(you)',
    'send': 'Send',
    'composer.placeholder': 'Write a message. Enter sends, Shift+Enter adds a line.',
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
  },
  zh: {
    'logout': '退出',
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
    'lobby': '大厅（所有人）',
    'you': '（你）',
    'send': '发送',
    'composer.placeholder': '输入消息。回车发送，Shift+回车换行。',
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

// t returns the text of key, with {name} placeholders filled from params.
export function t(key, params = {}) {
  const s = strings[lang][key] ?? strings.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(params[k] ?? ''));
}

// applyStatic translates the page's fixed text.
export function applyStatic() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of document.querySelectorAll('[data-i18n-placeholder]')) el.placeholder = t(el.dataset.i18nPlaceholder);
}
