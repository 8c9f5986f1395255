package main

import (
	"errors"
	"testing"
)

// FuzzDecodeRequest feeds arbitrary bodies to the strict decoder of the
// register and login requests: it must never panic, and must either fill
// the request or return an input error naming a field and a rule.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"account":"alice","password":"pw","name":"A"}`,
		`{"account":{"$ne":""},"password":"x"}`,
		`{"account":"a","password":"b"} trailing`,
		`[1,2,3]`, `null`, `""`, `{"name":"\u0000"}`, `{"account":1e999}`, `{`, ``,
		`{"account":"a","account":"b"}`, `{"x":{"y":{"z":[[[[]]]]}}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var reg registerRequest
		if err := decodeStrict(body, &reg); err != nil {
			var in *inputError
			if !errors.As(err, &in) || in.Field == "" || in.Rule == "" || in.Reason == "" {
				t.Fatalf("decode error %v is not an input error naming a field and a rule", err)
			}
		}
		var login loginRequest
		_ = decodeStrict(body, &login)
	})
}
