#!/bin/sh
# Child for `pipetrack run` tests: reports through `pipetrack enter|progress|message|exit`
# (the side channel), with its stdout sent elsewhere.
set -eu
pt="$1"
$pt enter "Side channel" --items 4 > /dev/null
$pt progress 3/4 -m "three of four" > /dev/null
$pt message "via the socket" > /dev/null
$pt exit > /dev/null
