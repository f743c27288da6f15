# Multi-node tests need a distributed test node: run the suite through bin/test (make test).
exclude = if Node.alive?(), do: [], else: [:distributed]
if exclude != [], do: IO.puts("not distributed: skipping multi-node tests (use bin/test)")
ExUnit.start(exclude: exclude)
