package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// modelJSON is one model in `models --json`.
type modelJSON struct {
	ID            string `json:"id"`
	WeightsCID    string `json:"weights_cid"`
	Architecture  string `json:"architecture"`
	NumLayers     uint32 `json:"num_layers"`
	HiddenSize    uint32 `json:"hidden_size"`
	ContextLength uint32 `json:"context_length"`
	Dtype         string `json:"dtype"`
	WeightsBytes  uint64 `json:"weights_bytes"`
	InStore       bool   `json:"in_store"`
	Loaded        bool   `json:"loaded"`
	Description   string `json:"description"`
}

func newModelsCommand(app *App) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "models [--json]",
		Short: "List the models this node can serve",
		Long: `List the models this node's backend can serve: id, weights CID (empty until
the model is converted into the store), layers, whether it is in the model store,
and whether it is loaded. --json prints {"models": [...]} with every field.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := app.config(cmd)
			if err != nil {
				return err
			}
			n, err := app.openNode(app.interrupt, cfg)
			if err != nil {
				return err
			}
			defer app.closeQuietly(n)
			models, err := n.ListModels(app.interrupt)
			if err != nil {
				return err
			}
			if jsonOut {
				return writeJSON(app.stdout, map[string][]modelJSON{"models": toModelJSON(models)})
			}
			return app.printModels(models)
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func toModelJSON(models []*pb.ModelInfo) []modelJSON {
	out := make([]modelJSON, 0, len(models))
	for _, m := range models {
		out = append(out, modelJSON{
			ID: m.GetId(), WeightsCID: m.GetWeightsCid(), Architecture: m.GetArchitecture(),
			NumLayers: m.GetNumLayers(), HiddenSize: m.GetHiddenSize(), ContextLength: m.GetContextLength(),
			Dtype: m.GetDtype(), WeightsBytes: m.GetWeightsBytes(), InStore: m.GetInStore(),
			Loaded: m.GetLoaded(), Description: m.GetDescription(),
		})
	}
	return out
}

func (app *App) printModels(models []*pb.ModelInfo) error {
	tw := tabwriter.NewWriter(app.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tLAYERS\tIN STORE\tLOADED\tWEIGHTS CID")
	for _, m := range models {
		cid := m.GetWeightsCid()
		if cid == "" {
			cid = "-"
		}
		layers := "-" // unknown until converted into the store
		if n := m.GetNumLayers(); n > 0 {
			layers = fmt.Sprint(n)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.GetId(), layers,
			yesNo(m.GetInStore()), yesNo(m.GetLoaded()), cid)
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
