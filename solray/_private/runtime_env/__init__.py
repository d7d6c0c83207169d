"""Runtime environments (Ray's `runtime_env`), in three steps, each its own module:

- `spec.py`: what a runtime_env may hold, checked where it is given, and
  Ray's merge rules (a task's env over its parent's, env_vars merged).
- `packages.py`: local folders (working_dir, py_modules) packed into
  content-addressed zips, uploaded once to the control store's key-value
  store, fetched and unpacked once per node.
- `agent.py`: on a node, turns a resolved env into what a worker process is
  started with (interpreter of a cached virtual environment, environment
  variables, working directory, import path, setup hook), building each
  piece once and sharing it between the workers of that env.
"""
