package conf

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzLoadHCL feeds arbitrary bytes to the configuration parser: it must
// return an error or a configuration, never panic, and whatever it accepts
// must also survive Validate.
func FuzzLoadHCL(f *testing.F) {
	ex, err := os.ReadFile(filepath.Join("..", "docs", "example.hcl"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ex)
	f.Add([]byte("listen = \"127.0.0.1:1\"\npeer \"b\" {\n addr = \"127.0.0.1:2\"\n}\n"))
	f.Add([]byte("log_channels = [\"/a\", 1]\nmax_scan_rows = 1e40\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c := DefaultConfig()
		if err := c.loadHCL(src, "fuzz.hcl"); err != nil {
			return
		}
		_ = c.Validate() // must not panic; invalid values are fine
	})
}
