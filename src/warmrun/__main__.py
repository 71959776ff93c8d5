"""`python -m warmrun`: the `warmrun` command with this interpreter, whether or not
its console script is on PATH (how the ZenML deployer flavor starts `warmrun serve`)."""

from warmrun.cli import app

if __name__ == "__main__":
    app(prog_name="warmrun")
