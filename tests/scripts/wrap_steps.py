"""Child for `pipetrack run` tests: reports two nested subtasks through the stdout protocol."""

import sys

out = sys.stdout
print("::pipetrack::init subtasks=2,stage=DAILY::ignored name")
print("before")
print("::pipetrack::enter::Outer")
print("::pipetrack::enter items=3::Loading files")
for i in range(1, 4):
    print(f"loaded file {i}")
    print(f"::pipetrack::progress done={i},total=3::file {i} of 3")
print("::pipetrack::exit")
print("::pipetrack::enter::Writing: 50%25 done")
print("::pipetrack::message::almost%0Athere")
print("::pipetrack::exit")
print("::pipetrack::exit")
print("::pipetrack::finish::all done")
out.flush()
sys.stderr.write("a warning on stderr\n")
