"""Import tools/convert_checkpoint.py's main() for the tests."""
from helpers.tools import load_tool

convert_main = load_tool('convert_checkpoint.py').main
