package main

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"sort"
)

// The plot: latency against N, log-log, one panel per figure, one line per proxy (and
// backend), the tool floor dashed. Drawn with the standard library only (image/png and the
// bitmap font in font.go).

// panelDef is one panel: the figure of each proxy, and the floor under it.
type panelDef struct {
	title, key, floor string
	ipvsFloor         string  // the floor of IPVS-mode sections
	scale             float64 // figure value × scale = plotted value (seconds)
}

var panels = []panelDef{
	{title: "cold start: start -> all N in kernel (s)", key: "cold.programmed_s", floor: "floor.batched_s", ipvsFloor: "floor.ipvs_s", scale: 1},
	{title: "bulk create: last write -> all N in kernel (s)", key: "bulk.after_api_s", floor: "floor.batched_s", ipvsFloor: "floor.ipvs_s", scale: 1},
	{title: "one change: API write -> new endpoint in kernel, p50 (s)", key: "change.p50_ms", floor: "floor.one_service_ms", scale: 0.001},
	{title: "churn: API write -> new endpoint in kernel, p99 (s)", key: "churn.p99_ms", floor: "floor.one_service_ms", scale: 0.001},
}

// point is one N of one series.
type point struct{ n, v float64 }

// plotFiles draws the sections of the given kpbench JSON files into out.
func plotFiles(files []string, out string) error {
	if out == "" {
		return fmt.Errorf("no PNG path")
	}
	var secs []*section
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		var r results
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		secs = append(secs, r.Sections...)
	}
	img := drawPlot(secs)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// seriesName is a proxy on a backend ("kproxy", "kproxy [legacy]"); kube-proxy nftables does
// not use iptables.
func seriesName(proxy, backend string) string {
	if backend == backendNFT || proxy == "kube-proxy nftables" || proxy == "kube-proxy ipvs" {
		return proxy
	}
	return proxy + " [" + backend + "]"
}

// collect returns each series' points for a panel, and the floor's per backend.
func collect(secs []*section, p panelDef) (map[string][]point, map[string][]point) {
	series, floors := map[string][]point{}, map[string][]point{}
	for _, sec := range secs {
		for _, row := range sec.Summary {
			if row.Key != p.key {
				continue
			}
			for proxy, v := range row.Median {
				if row.Capped[proxy] || v <= 0 {
					continue
				}
				name := seriesName(proxy, sec.Backend)
				series[name] = append(series[name], point{float64(sec.N), v * p.scale})
			}
		}
		floorKey := p.floor
		if sec.Backend == backendIPVS {
			floorKey = p.ipvsFloor
		}
		if v, ok := sec.Floors[floorKey]; ok && v > 0 {
			name := "floor [" + sec.Backend + "]"
			floors[name] = append(floors[name], point{float64(sec.N), v * p.scale})
		}
	}
	for _, m := range []map[string][]point{series, floors} {
		for k := range m {
			sort.Slice(m[k], func(i, j int) bool { return m[k][i].n < m[k][j].n })
		}
	}
	return series, floors
}

var palette = []color.RGBA{
	{0xd6, 0x27, 0x28, 0xff}, // kproxy: red
	{0x1f, 0x77, 0xb4, 0xff},
	{0x2c, 0xa0, 0x2c, 0xff},
	{0xff, 0x7f, 0x0e, 0xff},
	{0x94, 0x67, 0xbd, 0xff},
	{0x8c, 0x56, 0x4b, 0xff},
	{0xe3, 0x77, 0xc2, 0xff},
	{0x17, 0xbe, 0xcf, 0xff},
	{0xbc, 0xbd, 0x22, 0xff},
	{0x39, 0x3b, 0x79, 0xff},
}

var (
	black    = color.RGBA{0, 0, 0, 0xff}
	grey     = color.RGBA{0x99, 0x99, 0x99, 0xff}
	light    = color.RGBA{0xe6, 0xe6, 0xe6, 0xff}
	darkGrey = color.RGBA{0x44, 0x44, 0x44, 0xff}
	// ipvsFloorGrey tells the IPVS floor (netlink, in the VM) from the iptables ones
	ipvsFloorGrey = color.RGBA{0x66, 0x99, 0x66, 0xff}
)

func drawPlot(secs []*section) *image.RGBA {
	const w, h, cols, legendH = 1400, 1060, 2, 140
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fill(img, img.Bounds(), color.RGBA{0xff, 0xff, 0xff, 0xff})
	drawText(img, 20, 12, "kpbench: latency against N (services × 5 endpoints), log-log; dashed: the floors (iptables-restore; [ipvs]: netlink in the VM)", black)

	// One colour per series name, the same in every panel.
	names := map[string]bool{}
	for _, p := range panels {
		s, f := collect(secs, p)
		for k := range s {
			names[k] = true
		}
		for k := range f {
			names[k] = true
		}
	}
	var order []string
	for k := range names {
		order = append(order, k)
	}
	sort.Slice(order, func(i, j int) bool {
		if a, b := seriesRank(order[i]), seriesRank(order[j]); a != b {
			return a < b
		}
		return order[i] < order[j]
	})
	colours := map[string]color.RGBA{}
	k := 0
	for _, name := range order {
		if isFloor(name) {
			colours[name] = grey
			switch name {
			case "floor [" + backendLegacy + "]":
				colours[name] = darkGrey
			case "floor [" + backendIPVS + "]":
				colours[name] = ipvsFloorGrey
			}
			continue
		}
		colours[name] = palette[k%len(palette)]
		k++
	}

	pw, ph := w/cols, (h-40-legendH)/((len(panels)+cols-1)/cols)
	for i, p := range panels {
		x0, y0 := (i%cols)*pw, 40+(i/cols)*ph
		series, floors := collect(secs, p)
		drawPanel(img, image.Rect(x0+80, y0+40, x0+pw-30, y0+ph-50), p.title, series, floors, colours)
	}

	// Legend.
	y := h - legendH + 10
	x := 40
	for _, name := range order {
		c := colours[name]
		if isFloor(name) {
			dashed(img, x, y+7, x+40, y+7, c)
		} else {
			thickLine(img, x, y+7, x+40, y+7, c)
			marker(img, x+20, y+7, c)
		}
		drawText(img, x+50, y, name, black)
		x += 50 + textWidth(name) + 40
		if x > w-300 {
			x, y = 40, y+30
		}
	}
	return img
}

func seriesRank(name string) int {
	switch {
	case name == "kproxy" || (len(name) > 6 && name[:7] == "kproxy "):
		return 0
	case isFloor(name):
		return 2
	}
	return 1
}

func isFloor(name string) bool { return len(name) > 5 && name[:5] == "floor" }

// drawPanel draws one log-log panel inside r (the plotting area; labels go around it).
func drawPanel(img *image.RGBA, r image.Rectangle, title string, series, floors map[string][]point, colours map[string]color.RGBA) {
	drawText(img, r.Min.X, r.Min.Y-30, title, black)
	xmin, xmax, ymin, ymax := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, m := range []map[string][]point{series, floors} {
		for _, pts := range m {
			for _, p := range pts {
				xmin, xmax = math.Min(xmin, p.n), math.Max(xmax, p.n)
				ymin, ymax = math.Min(ymin, p.v), math.Max(ymax, p.v)
			}
		}
	}
	rect(img, r, black)
	if math.IsInf(xmin, 1) {
		drawText(img, r.Min.X+20, r.Min.Y+20, "no data", grey)
		return
	}
	// Decades around the data; N padded by half a decade.
	lx0, lx1 := math.Log10(xmin)-0.3, math.Log10(xmax)+0.3
	ly0, ly1 := math.Floor(math.Log10(ymin)), math.Ceil(math.Log10(ymax))
	if ly1 <= ly0 {
		ly1 = ly0 + 1
	}
	px := func(n float64) int {
		return r.Min.X + int((math.Log10(n)-lx0)/(lx1-lx0)*float64(r.Dx()))
	}
	py := func(v float64) int {
		return r.Max.Y - int((math.Log10(v)-ly0)/(ly1-ly0)*float64(r.Dy()))
	}
	for d := ly0; d <= ly1; d++ {
		y := py(math.Pow(10, d))
		hline(img, r.Min.X+1, r.Max.X-1, y, light)
		label := formatTick(math.Pow(10, d))
		drawText(img, r.Min.X-textWidth(label)-8, y-7, label, black)
	}
	seen := map[float64]bool{}
	for _, m := range []map[string][]point{series, floors} {
		for _, pts := range m {
			for _, p := range pts {
				if seen[p.n] {
					continue
				}
				seen[p.n] = true
				x := px(p.n)
				vline(img, x, r.Min.Y+1, r.Max.Y-1, light)
				label := fmt.Sprintf("%d", int(p.n))
				drawText(img, x-textWidth(label)/2, r.Max.Y+8, label, black)
			}
		}
	}
	rect(img, r, black)
	for _, name := range sortedKeys(floors) {
		pts := floors[name]
		for i := 1; i < len(pts); i++ {
			dashed(img, px(pts[i-1].n), py(pts[i-1].v), px(pts[i].n), py(pts[i].v), colours[name])
		}
		for _, p := range pts {
			hdash(img, px(p.n)-12, px(p.n)+12, py(p.v), colours[name])
		}
	}
	for _, name := range sortedKeys(series) {
		pts, c := series[name], colours[name]
		for i := 1; i < len(pts); i++ {
			thickLine(img, px(pts[i-1].n), py(pts[i-1].v), px(pts[i].n), py(pts[i].v), c)
		}
		for _, p := range pts {
			marker(img, px(p.n), py(p.v), c)
		}
	}
}

func formatTick(v float64) string {
	switch {
	case v >= 1:
		return fmt.Sprintf("%gs", v)
	case v >= 0.001:
		return fmt.Sprintf("%gms", v*1000)
	}
	return fmt.Sprintf("%gus", v*1e6)
}

func fill(img *image.RGBA, r image.Rectangle, c color.Color) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.Set(x, y, c)
		}
	}
}

func rect(img *image.RGBA, r image.Rectangle, c color.Color) {
	hline(img, r.Min.X, r.Max.X, r.Min.Y, c)
	hline(img, r.Min.X, r.Max.X, r.Max.Y, c)
	vline(img, r.Min.X, r.Min.Y, r.Max.Y, c)
	vline(img, r.Max.X, r.Min.Y, r.Max.Y, c)
}

func hline(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.Color) {
	for y := y0; y <= y1; y++ {
		img.Set(x, y, c)
	}
}

func hdash(img *image.RGBA, x0, x1, y int, c color.Color) {
	for x := x0; x <= x1; x++ {
		img.Set(x, y, c)
		img.Set(x, y+1, c)
	}
}

// line calls plot for every pixel of the segment (Bresenham).
func line(x0, y0, x1, y1 int, plot func(x, y, i int)) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := sign(x1-x0), sign(y1-y0)
	e := dx + dy
	for i := 0; ; i++ {
		plot(x0, y0, i)
		if x0 == x1 && y0 == y1 {
			return
		}
		if e2 := 2 * e; e2 >= dy {
			e += dy
			x0 += sx
		} else if e2 <= dx {
			e += dx
			y0 += sy
		} else {
			e += dy + dx
			x0 += sx
			y0 += sy
		}
	}
}

func thickLine(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	line(x0, y0, x1, y1, func(x, y, _ int) {
		for d := -1; d <= 1; d++ {
			img.Set(x+d, y, c)
			img.Set(x, y+d, c)
		}
	})
}

func dashed(img *image.RGBA, x0, y0, x1, y1 int, c color.Color) {
	line(x0, y0, x1, y1, func(x, y, i int) {
		if i%12 < 7 {
			img.Set(x, y, c)
			img.Set(x, y+1, c)
		}
	})
}

func marker(img *image.RGBA, x, y int, c color.Color) {
	fill(img, image.Rect(x-4, y-4, x+5, y+5), c)
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

func sign(v int) int {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}

func sortedKeys(m map[string][]point) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
