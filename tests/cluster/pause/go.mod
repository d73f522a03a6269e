module otter.local/pause

go 1.24
