# Sourced by scripts/ha-venv.sh and scripts/build-llama.sh: where the tools the tests run are cached, outside the
# repository so that every clone and CI run on the machine reuses them. PICLUSTER_TEST_CACHE wins; otherwise
# /var/cache/picluster-test for root and $XDG_CACHE_HOME/picluster-test (~/.cache) for anyone else, who cannot
# write /var/cache.
picluster_test_cache() {
  if [[ -n ${PICLUSTER_TEST_CACHE:-} ]]; then
    echo "$PICLUSTER_TEST_CACHE"
  elif [[ $(id -u) -eq 0 ]]; then
    echo /var/cache/picluster-test
  else
    echo "${XDG_CACHE_HOME:-$HOME/.cache}/picluster-test"
  fi
}
