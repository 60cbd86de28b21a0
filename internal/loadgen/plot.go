package loadgen

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WritePlot writes a PNG of three histograms (TTFT, inter-token latency,
// end-to-end latency) with p50, p95 and p99 marked as vertical lines.
func (r *Report) WritePlot(path string) error {
	panels := []struct {
		title   string
		samples []float64
		dist    Dist
	}{
		{"Time to first token (ms)", r.ttfts, r.TTFT},
		{"Inter-token latency (ms)", r.itls, r.ITL},
		{"End-to-end latency (ms)", r.e2els, r.E2E},
	}
	marks := []struct {
		name string
		pick func(Dist) float64
		col  color.RGBA
	}{
		{"p50", func(d Dist) float64 { return d.P50 }, color.RGBA{G: 140, A: 255}},
		{"p95", func(d Dist) float64 { return d.P95 }, color.RGBA{R: 230, G: 140, A: 255}},
		{"p99", func(d Dist) float64 { return d.P99 }, color.RGBA{R: 200, A: 255}},
	}
	plots := make([][]*plot.Plot, len(panels))
	for i, pn := range panels {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s — %d samples", pn.title, len(pn.samples))
		p.Y.Label.Text = "count"
		if len(pn.samples) > 0 {
			h, err := plotter.NewHist(plotter.Values(pn.samples), 30)
			if err != nil {
				return err
			}
			h.FillColor = color.RGBA{R: 90, G: 120, B: 200, A: 255}
			p.Add(h)
			top := 0.0
			for _, b := range h.Bins {
				top = max(top, b.Weight)
			}
			for _, m := range marks {
				x := m.pick(pn.dist)
				l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: top}})
				if err != nil {
					return err
				}
				l.Color, l.Width, l.Dashes = m.col, vg.Points(1.5), []vg.Length{vg.Points(4), vg.Points(2)}
				p.Add(l)
				p.Legend.Add(fmt.Sprintf("%s %.1f", m.name, x), l)
			}
			p.Legend.Top = true
		}
		plots[i] = []*plot.Plot{p}
	}
	img := vgimg.New(8*vg.Inch, 9*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadX: vg.Millimeter, PadY: 3 * vg.Millimeter,
		PadTop: 2 * vg.Millimeter, PadBottom: 2 * vg.Millimeter, PadLeft: 2 * vg.Millimeter, PadRight: 2 * vg.Millimeter}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
