package chaos

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// SmallFS mounts a tmpfs of size bytes on a new directory of the test's
// own and returns the directory; it is unmounted when the test ends. A
// real size-limited filesystem, so a store on it fails the way a full
// disk does (ENOSPC on write), not at a limit the store keeps itself.
//
// Mounting needs CAP_SYS_ADMIN (root, as on the machines the suite runs
// on); without it the test fails saying so: a full disk is not something
// to simulate with a store's own limits.
func SmallFS(t testing.TB, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "small-fs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0755", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("mount a %d-byte tmpfs on %s (needs CAP_SYS_ADMIN; the disk-full scenario runs on a real size-limited filesystem): %v: %s",
			size, dir, err, strings.TrimSpace(string(out)))
	}
	// Registered after TempDir's cleanup, so it runs before the
	// directory is removed.
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			// Still busy (a process holds a file): detach it now, the
			// kernel frees it when the last holder goes.
			if out2, err2 := exec.Command("umount", "-l", dir).CombinedOutput(); err2 != nil {
				t.Errorf("umount %s: %v: %s; %v: %s", dir, err, out, err2, out2)
			}
		}
	})
	return dir
}

// fillChunk is how much FillFS writes at a time.
const fillChunk = 1 << 20

// FillFS writes a file in dir until the filesystem has no space left, and
// returns its path: removing it gives the space back. The file is bounded
// by the filesystem's size, so the loop ends.
func FillFS(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	limit := int64(st.Blocks) * st.Bsize // never more than the whole filesystem
	chunk := make([]byte, fillChunk)
	var written int64
	for size := len(chunk); written <= limit; {
		n, err := f.Write(chunk[:size])
		written += int64(n)
		if errors.Is(err, syscall.ENOSPC) {
			if size == 1 {
				return path // not one byte more: full
			}
			size = max(1, size/16) // fill the last partial blocks too
			continue
		}
		if err != nil {
			t.Fatalf("filling %s: %v", dir, err)
		}
	}
	t.Fatalf("filling %s: wrote %d bytes, more than the filesystem holds, without ENOSPC", dir, written)
	return ""
}

// FreeBytes is what dir's filesystem has free.
func FreeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}
