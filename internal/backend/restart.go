package backend

import (
	"context"
	"fmt"
	"time"
)

// watch restarts the backend whenever the serving process exits, until the
// supervisor closes or the restart budget is spent.
func (s *Supervisor) watch(p *process) {
	defer s.wg.Done()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-p.exited:
		}
		s.cfg.logger.Warn("backend exited; restarting", "pid", p.pid(), "status", describeExit(p.exitErr))
		p.client.Close()
		p.removeSocket()
		if !s.setState(nil, nil) {
			return
		}
		next, err := s.restart(p)
		if err != nil {
			s.cfg.logger.Error("backend not restarted", "err", err)
			s.setState(nil, err)
			return
		}
		if s.cfg.onRestart != nil { // before the new process serves, so callers see the count first
			s.cfg.onRestart()
		}
		if !s.setState(next, nil) {
			_ = next.stop(s.cfg.stopTimeout, false) // closed while starting
			return
		}
		s.cfg.logger.Info("backend restarted", "pid", next.pid())
		p = next
	}
}

// restart starts a new process, retrying with backoff (the first try at
// once) while the per-minute budget lasts.
func (s *Supervisor) restart(dead *process) (*process, error) {
	lastErr := fmt.Errorf("%s; last stderr: %q", describeExit(dead.exitErr), dead.tail.Lines())
	delay := time.Duration(0)
	for {
		if !s.takeRestart(time.Now()) {
			return nil, fmt.Errorf("%w: %d restarts in the last minute; last failure: %w",
				ErrGaveUp, s.cfg.maxRestarts, lastErr)
		}
		timer := time.NewTimer(delay)
		select {
		case <-s.ctx.Done():
			timer.Stop()
			return nil, ErrClosed
		case <-timer.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.startTimeout)
		p, err := spawn(ctx, s.cfg, s.addr, s.socket)
		cancel()
		if err == nil {
			return p, nil
		}
		s.cfg.logger.Warn("backend restart failed", "err", err)
		lastErr = err
		delay = min(max(2*delay, 250*time.Millisecond), restartBackoffMax)
	}
}

// takeRestart records a restart at now when fewer than maxRestarts happened
// in the minute before it; it reports whether the restart may go ahead.
func (s *Supervisor) takeRestart(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	recent := s.restarts[:0]
	for _, t := range s.restarts {
		if now.Sub(t) < time.Minute {
			recent = append(recent, t)
		}
	}
	s.restarts = recent
	if len(recent) >= s.cfg.maxRestarts {
		return false
	}
	s.restarts = append(s.restarts, now)
	return true
}
