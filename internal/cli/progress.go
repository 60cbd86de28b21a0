package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// progressEvery throttles redraws of the progress line.
const progressEvery = 100 * time.Millisecond

// progressLine draws model-load progress as one status line on a terminal
// and stays quiet when the stream is not a terminal.
type progressLine struct {
	w     io.Writer
	model string
	tty   bool
	drawn bool
	last  time.Time
	phase string
}

func newProgressLine(w io.Writer, model string) *progressLine {
	f, ok := w.(*os.File)
	return &progressLine{w: w, model: model, tty: ok && term.IsTerminal(int(f.Fd()))}
}

// update redraws the line for p, at most every progressEvery unless the
// phase changed.
func (l *progressLine) update(p *pb.LoadModelProgress) {
	if !l.tty {
		return
	}
	now := time.Now()
	if p.GetPhase() == l.phase && now.Sub(l.last) < progressEvery {
		return
	}
	l.phase, l.last, l.drawn = p.GetPhase(), now, true
	fmt.Fprintf(l.w, "\r\x1b[K%s", progressText(l.model, p))
}

// clear removes the line, leaving the cursor at the start of it.
func (l *progressLine) clear() {
	if l.drawn {
		fmt.Fprint(l.w, "\r\x1b[K")
		l.drawn = false
	}
}

// progressText renders "loading M: phase [#####-----]  50% (5/10)", or
// "loading M: phase (5)" when the total is unknown.
func progressText(model string, p *pb.LoadModelProgress) string {
	head := fmt.Sprintf("loading %s: %s", model, p.GetPhase())
	done, total := p.GetDone(), p.GetTotal()
	switch {
	case total > 0:
		const width = 20
		done = min(done, total)
		filled := int(done * width / total)
		return fmt.Sprintf("%s [%s%s] %3d%% (%d/%d)", head,
			strings.Repeat("#", filled), strings.Repeat("-", width-filled), done*100/total, done, total)
	case done > 0:
		return fmt.Sprintf("%s (%d)", head, done)
	}
	return head + " ..."
}
