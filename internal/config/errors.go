package config

import "errors"

// ErrInvalid reports a setting with a value outside its allowed set.
var ErrInvalid = errors.New("invalid config")

// ErrFile reports a config file that cannot be read or parsed.
var ErrFile = errors.New("config file")
