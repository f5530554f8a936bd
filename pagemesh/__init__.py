"""The `pagemesh` console command; each package contributes its own subcommands."""
