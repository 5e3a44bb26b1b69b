"""Worker processes under a supervisor (`--workers=N`): every core serves, one lifecycle.

`supervisor.py` owns the sources, config reloads and the merged version states;
`worker.py` is one `Server` per process on the shared ports; `channel.py` carries their
messages; `cluster.py` merges the workers' version states; `metrics.py` sums their metrics;
`cpus.py` counts the cores `--workers=0` uses.
"""
