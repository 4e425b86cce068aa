from frankenlm.cli.app import app

app(prog_name="frankenlm")
