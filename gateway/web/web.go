// Package web holds the browser page the gateway serves, embedded in the
// binary so a gateway needs no files beside it and the page loads nothing
// from outside the gateway's origin: index.html (both views), style.css,
// app.js (the page), conn.js (the socket: reconnect, resume, outbox),
// scroll.js (where the message list stays as it changes), account.js
// (change password, log out everywhere), rooms.js (new room, browse
// rooms, a room's members, invitations) and i18n.js (English and
// Simplified Chinese). Plain ES modules, no build.
package web

import "embed"

// Files are the page's files: index.html at the root, the rest under it.
//
//go:embed index.html style.css app.js conn.js i18n.js scroll.js account.js rooms.js
var Files embed.FS
