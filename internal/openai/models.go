package openai

import (
	"net/http"
)

// listModels serves GET /v1/models.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	models, err := s.engine.Models(r.Context())
	if err != nil {
		s.writeError(w, r, engineError(err, "", s.opts.RetryAfter))
		return
	}
	list := modelList{Object: "list", Data: make([]modelObject, len(models))}
	for i, m := range models {
		list.Data[i] = toModelObject(m)
	}
	s.writeJSON(w, http.StatusOK, list)
}

// retrieveModel serves GET /v1/models/{id}.
func (s *Server) retrieveModel(w http.ResponseWriter, r *http.Request) {
	m, aerr := s.lookupModel(r, r.PathValue("id"), "")
	if aerr != nil {
		aerr.Param = "" // the id is in the path, not a body field
		s.writeError(w, r, aerr)
		return
	}
	s.writeJSON(w, http.StatusOK, toModelObject(m))
}

func toModelObject(m Model) modelObject {
	var created int64
	if !m.Created.IsZero() {
		created = m.Created.Unix()
	}
	where := m.Where
	if where == nil {
		where = []string{}
	}
	return modelObject{
		ID:            m.ID,
		Object:        "model",
		Created:       created,
		OwnedBy:       "edgellm",
		WeightsCID:    m.WeightsCID,
		Where:         where,
		ContextLength: m.ContextLength,
		NumLayers:     m.NumLayers,
		Architecture:  m.Architecture,
	}
}
