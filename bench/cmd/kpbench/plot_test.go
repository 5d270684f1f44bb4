package main

import (
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestPlot(t *testing.T) {
	var secs []*section
	for _, n := range []int{1000, 10000} {
		sec := &section{sectionCfg: sectionCfg{N: n, Backend: backendNFT},
			Floors: map[string]float64{"floor.batched_s": float64(n) / 3000, "floor.one_service_ms": 15}}
		for _, p := range panels {
			sec.Summary = append(sec.Summary, summaryRow{Key: p.key, Median: map[string]float64{
				"kproxy": float64(n) / 2000 / p.scale / 1000, "kube-proxy nftables": float64(n) / 1000 / p.scale / 1000}})
		}
		secs = append(secs, sec)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "r.json")
	b, err := json.Marshal(results{Sections: secs})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "r.png")
	if err := plotFiles([]string{in}, out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	red := 0
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y++ {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x++ {
			if r, g, b, _ := img.At(x, y).RGBA(); r>>8 == 0xd6 && g>>8 == 0x27 && b>>8 == 0x28 {
				red++
			}
		}
	}
	if red < 500 {
		t.Errorf("only %d pixels of kproxy's colour: the series are not drawn", red)
	}
}
