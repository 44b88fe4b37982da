from text2fx.cli import entry

entry()
