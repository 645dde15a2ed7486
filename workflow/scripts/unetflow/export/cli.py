"""`python -m unetflow.export`: a model package exported for other runtimes, as an ONNX graph of tiles
(`unetflow.export.onnx`) or as a BioImage Model Zoo model for Fiji/deepImageJ, ilastik and bioimageio.core
(`unetflow.export.bioimageio`).

    python -m unetflow.export --model results/unet/package/unet.pt --onnx unet.onnx
    python -m unetflow.export --model results/unet/package/unet.pt --bioimageio unet.zip --image some_image.tif \\
        --author "Ada Lovelace" --licence MIT
"""

import argparse

from unetflow.infer.package import load_package


def parser() -> argparse.ArgumentParser:
    found = argparse.ArgumentParser(prog="python -m unetflow.export", description=__doc__.split("\n\n")[0],
                                    formatter_class=argparse.RawDescriptionHelpFormatter,
                                    epilog=__doc__.split("\n\n", 1)[1])
    found.add_argument("--model", required=True, help="a model package (results/<experiment>/package/*.pt)")
    target = found.add_mutually_exclusive_group(required=True)
    target.add_argument("--onnx", help="the ONNX file to write")
    target.add_argument("--bioimageio", help="the bioimage.io model zip to write")
    zoo = found.add_argument_group("bioimage.io")
    zoo.add_argument("--image", help="an image unetflow reads, of the kind the model segments: its test input is cut "
                                     "from its centre (required with --bioimageio)")
    zoo.add_argument("--author", action="append", default=[], help="an author (repeat for several; default: the user "
                                                                   "running the export)")
    zoo.add_argument("--licence", "--license", help="an SPDX licence id (default: CC-BY-4.0, as the Zoo recommends)")
    zoo.add_argument("--name", help="the model's name (default: 'unetflow <package name>')")
    return found


def main(argv=None) -> None:
    """Export a model package (see the module docstring)."""
    arguments = parser()
    args = arguments.parse_args(argv)
    if args.bioimageio and not args.image:
        arguments.error("--bioimageio needs --image: the test input is cut from a real image")
    try:
        print(export_bioimageio(args) if args.bioimageio else export_onnx(args))
    except ValueError as error:  # PackageError, an unreadable image, a failed model test: said without a traceback
        raise SystemExit(f"error: {error}") from None


def export_onnx(args) -> str:
    from unetflow.export.onnx import export_onnx, onnx_summary

    return onnx_summary(load_package(args.model), export_onnx(args.model, args.onnx))


def export_bioimageio(args) -> str:
    from unetflow.export.bioimageio import export_bioimageio

    path, notes = export_bioimageio(args.model, args.bioimageio, args.image, args.author, args.licence, args.name)
    return "\n".join([f"wrote {path} (passed bioimageio.core's model test); it does not carry:",
                      *(f"- {note}" for note in notes)])
