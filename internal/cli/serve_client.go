package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/apiclient"
	"github.com/edgellm/edgellm/internal/serve"
)

// serveTarget is how batch and bench find the serve they drive: --url, else
// the serve running on the data directory, with the API key of
// --api-key-file or $EDGELLM_API_KEY.
type serveTarget struct {
	url        string
	apiKeyFile string
}

func (s *serveTarget) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.url, "url", "", "serve's base URL, e.g. http://127.0.0.1:8080 (default: the serve running on the data directory)")
	f.StringVar(&s.apiKeyFile, "api-key-file", "", "file holding serve's API key (or $EDGELLM_API_KEY)")
}

// client resolves the serve and checks that it answers (GET /v1/models),
// returning its model ids: none running or unreachable is ErrUnavailable, a
// refused key ErrInvalidArgument.
func (s *serveTarget) client(ctx context.Context, app *App, cmd *cobra.Command) (*apiclient.Client, []string, error) {
	key, err := readAPIKey(s.apiKeyFile)
	if err != nil {
		return nil, nil, err
	}
	base := s.url
	if base == "" {
		cfg, err := app.config(cmd)
		if err != nil {
			return nil, nil, err
		}
		rec, err := serve.Running(cfg.DataDir)
		if errors.Is(err, serve.ErrNotRunning) {
			return nil, nil, fmt.Errorf("%w: no serve runs on %s (start one with 'edgellm serve', or pass --url)", ErrUnavailable, cfg.DataDir)
		}
		if err != nil {
			return nil, nil, err
		}
		base = rec.URL
	} else if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, nil, fmt.Errorf("%w: --url %q: want http://host:port", ErrInvalidArgument, base)
	}
	c := apiclient.New(base, key)
	ids, err := s.models(ctx, c)
	if err != nil {
		return nil, nil, err
	}
	return c, ids, nil
}

// models lists the serve's model ids.
func (s *serveTarget) models(ctx context.Context, c *apiclient.Client) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.Do(ctx, http.MethodGet, "/v1/models", nil)
	if err != nil {
		return nil, fmt.Errorf("%w: serve at %s: %w", ErrUnavailable, c.BaseURL, err)
	}
	switch resp.Status {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("%w: serve at %s refused the API key (--api-key-file, $EDGELLM_API_KEY): %s",
			ErrInvalidArgument, c.BaseURL, apiclient.ErrorMessage(resp.Body))
	default:
		return nil, fmt.Errorf("%w: serve at %s: GET /v1/models: HTTP %d", ErrUnavailable, c.BaseURL, resp.Status)
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(resp.Body, &list); err != nil {
		return nil, fmt.Errorf("%w: serve at %s: GET /v1/models: %w", ErrUnavailable, c.BaseURL, err)
	}
	ids := make([]string, len(list.Data))
	for i, m := range list.Data {
		ids[i] = m.ID
	}
	return ids, nil
}
