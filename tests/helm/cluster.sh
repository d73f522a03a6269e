# shellcheck shell=bash
# The cluster half of tests/helm/test (sourced by it). Being written.
