#!/bin/sh
# Child for `pipetrack run` tests: the side-channel commands, each with Python's import log
# (-X importtime) appended to the file $2, so a test can tell what every call loaded. The
# count comes after the exit: it is the run's.
set -eu
pt="$1"
log="$2"
PYTHONPROFILEIMPORTTIME=1 $pt enter "Light" --items 8 > /dev/null 2>> "$log"
PYTHONPROFILEIMPORTTIME=1 $pt progress 3/8 > /dev/null 2>> "$log"
PYTHONPROFILEIMPORTTIME=1 $pt message "light as a feather" > /dev/null 2>> "$log"
PYTHONPROFILEIMPORTTIME=1 $pt exit > /dev/null 2>> "$log"
PYTHONPROFILEIMPORTTIME=1 $pt count rows 5 > /dev/null 2>> "$log"
