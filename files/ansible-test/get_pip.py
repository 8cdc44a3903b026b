"""Stand-in for the pip bootstrap script ansible-test downloads (get-pip.py) from a host outside
the package registries. ansible-test runs it with the new virtualenv's Python as
`get_pip.py [pip options] pip==VERSION [--no-setuptools] [--no-wheel]`; this installs pip with
the interpreter's own ensurepip, then exactly that pip version from PyPI."""

import subprocess
import sys


def main(argv: list[str]) -> None:
    wanted = [arg for arg in argv if arg.startswith("pip==")]
    options = [arg for arg in argv if arg.startswith("-") and arg not in ("--no-setuptools", "--no-wheel")]
    subprocess.run([sys.executable, "-m", "ensurepip", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "pip", "install", *options, *(wanted or ["pip"])], check=True)


if __name__ == "__main__":
    main(sys.argv[1:])
