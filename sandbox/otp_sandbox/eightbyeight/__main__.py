import sys

from .cli import main

sys.exit(main(["sms-emulator", *sys.argv[1:]]))
