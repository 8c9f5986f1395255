package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"testing"
)

// The idle scenario's breakdown reads a real pprof endpoint (this test
// binary's own).
func TestReadRuntimeMemory(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	m, err := readRuntimeMemory(context.Background(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if m.stack <= 0 || m.heapLive <= 0 || m.heapInuse < m.heapLive || m.goroutines < 1 {
		t.Fatalf("read %+v", m)
	}
	r := result{Figures: map[string]float64{}}
	addRuntimeMemory(&r, runtimeMemory{}, runtimeMemory{stack: 2048 * 10, goroutines: 10}, 10)
	if r.Figures["stack_kib_per_socket"] != 2 || r.Figures["goroutines_per_socket"] != 1 {
		t.Fatalf("breakdown %v", r.Figures)
	}
}
