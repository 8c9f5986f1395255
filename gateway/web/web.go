// Package web holds the browser page the gateway serves, embedded in the
// binary so a gateway needs no files beside it and the page loads nothing
// from outside the gateway's origin.
package web

import "embed"

// Files are the page's files: index.html at the root, the rest under it.
//
//go:embed index.html style.css
var Files embed.FS
