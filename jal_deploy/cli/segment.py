"""`jal-segment`: the runtime command (filled by the runtime issue)."""
import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jal-deploy")
def main() -> None:
    """Segment images, folders, videos, cameras or a Cityscapes val tree with an exported model.

    No subcommand is available yet in this release: the runtime (ONNX Runtime, TensorRT, torch .pt2
    backends) lands with the runtime issue. Use `jal-data` to prepare data meanwhile.
    """
