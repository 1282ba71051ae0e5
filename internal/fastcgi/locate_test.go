package fastcgi

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLocate(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	write := func(name string) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"index.php", "info.php", "style.css", "blog/index.php", "docs/index.html",
		"empty/.keep", "UP.PHP", ".env", "dir.php/a.txt"} {
		write(f)
	}
	os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("s"), 0o644)
	os.WriteFile(filepath.Join(outside, "evil.php"), []byte("s"), 0o644)
	os.Symlink(filepath.Join(outside, "secret.txt"), filepath.Join(root, "link.txt"))
	os.Symlink(filepath.Join(outside, "evil.php"), filepath.Join(root, "evil.php"))
	os.Symlink("style.css", filepath.Join(root, "inside.css"))

	tests := []struct {
		path string
		want Location
	}{
		{"/info.php", Location{Kind: Script, ScriptName: "/info.php"}},
		{"/info.php/a/b", Location{Kind: Script, ScriptName: "/info.php", PathInfo: "/a/b"}},
		{"/missing.php", Location{Kind: NotFound}},
		{"/missing.php/x", Location{Kind: NotFound}},
		{"/UP.PHP", Location{Kind: Script, ScriptName: "/UP.PHP"}},
		{"/up.php", Location{Kind: NotFound}},
		{"/dir.php/a.txt", Location{Kind: NotFound}}, // a directory is not a script
		{"/style.css", Location{Kind: File, File: "style.css"}},
		{"/inside.css", Location{Kind: File, File: "inside.css"}},
		{"/.env", Location{Kind: File, File: ".env"}},
		{"/blog", Location{Kind: Redirect, RedirectTo: "/blog/"}},
		{"/blog/", Location{Kind: Script, ScriptName: "/blog/index.php"}},
		{"/docs/", Location{Kind: Script, ScriptName: "/index.php"}}, // no index.php in it
		{"/empty/", Location{Kind: Script, ScriptName: "/index.php"}},
		{"/", Location{Kind: Script, ScriptName: "/index.php"}},
		{"", Location{Kind: Script, ScriptName: "/index.php"}},
		{"/blog/2024/hello", Location{Kind: Script, ScriptName: "/index.php"}},
		{"/link.txt", Location{Kind: Script, ScriptName: "/index.php"}}, // not a file under root
		{"/evil.php", Location{Kind: NotFound}},
		{"/../outside/secret.txt", Location{Kind: NotFound}},
		{"/a/../info.php", Location{Kind: NotFound}},
		{"/nul\x00.php", Location{Kind: NotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := Locate(root, nil, nil, tt.path); got != tt.want {
				t.Errorf("Locate(%q) = %+v, want %+v", tt.path, got, tt.want)
			}
		})
	}

	t.Run("no front controller", func(t *testing.T) {
		empty := t.TempDir()
		if got := Locate(empty, nil, nil, "/anything"); got.Kind != NotFound {
			t.Errorf("got %+v, want NotFound", got)
		}
	})
	t.Run("index list", func(t *testing.T) {
		got := Locate(root, []string{"index.html", "index.php"}, nil, "/docs/")
		if got != (Location{Kind: File, File: "docs/index.html"}) {
			t.Errorf("got %+v", got)
		}
	})
}
