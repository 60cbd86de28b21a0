module github.com/edgellm/edgellm

go 1.26.8
