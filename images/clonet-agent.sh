#!/bin/busybox sh
# clonet's guest agent: runs the commands clonet sends over a serial line
# and answers with their status and output. One request a line:
#   X <id> <timeout-secs> <base64 script|-> <base64 stdin|->
# one answer a line:
#   R <id> <status> <base64 stdout|-> <base64 stderr|->
# and "H clonet-agent 1" when it starts. Base64 keeps it binary-safe.
dev=${1:-/dev/ttyS1}
busybox stty -F "$dev" raw -echo
exec 3<>"$dev"
echo "H clonet-agent 1" >&3
while read -r op id secs script input <&3; do
    [ "$op" = X ] || continue
    d=/tmp/.clonet-agent.$id
    busybox mkdir -p "$d"
    if [ "$script" = - ]; then : >"$d/c"; else echo "$script" | busybox base64 -d >"$d/c"; fi
    if [ "$input" = - ]; then : >"$d/i"; else echo "$input" | busybox base64 -d >"$d/i"; fi
    busybox timeout -s KILL "$secs" busybox sh "$d/c" <"$d/i" >"$d/o" 2>"$d/e"
    rc=$?
    o=$(busybox base64 -w 0 "$d/o")
    e=$(busybox base64 -w 0 "$d/e")
    echo "R $id $rc ${o:--} ${e:--}" >&3
    busybox rm -rf "$d"
done
