"""`jal-data`: prepare and inspect datasets (real trees and the embedded synthetic benchmark)."""
import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jal-deploy")
def main() -> None:
    """Prepare and inspect GTA5 / SYNTHIA / Cityscapes trees and the embedded synthetic benchmark."""


# Subcommands register below, one line each.
from jal_deploy.cli.data_check import check; main.add_command(check)  # noqa: E402
from jal_deploy.cli.data_synth import synth; main.add_command(synth)  # noqa: E402
from jal_deploy.cli.data_synth_video import synth_video; main.add_command(synth_video)  # noqa: E402
