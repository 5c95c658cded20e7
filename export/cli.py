"""`jal-export`: the export command (filled by the export issue)."""
import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jal-deploy")
def main() -> None:
    """Fold each WTM into Dec2^T and emit ONNX / TensorRT / torch.export artefacts.

    No subcommand is available yet in this release: the exporter lands with the export issue. The folding
    itself already exists as `training.models.wtm.fold_decoder` (see the README's equation map).
    """
