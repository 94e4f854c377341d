#!/bin/busybox sh
# clonet's guest agent: runs the commands clonet sends over a serial line
# and answers with their status and output. One request a line:
#   X <id> <timeout-secs> <base64 script|-> <base64 stdin|-> <max-output>
# one answer a line:
#   R <id> <status> <base64 stdout|-> <base64 stderr|-> <truncated 0|1>
# and "H clonet-agent 1" when it starts. Base64 keeps it binary-safe; each
# output is cut at max-output bytes (the host reads no longer answer).
dev=${1:-/dev/ttyS1}
busybox stty -F "$dev" raw -echo
exec 3<>"$dev"
echo "H clonet-agent 1" >&3
while read -r op id secs script input max <&3; do
    [ "$op" = X ] || continue
    case "$max" in ''|*[!0-9]*) max=16777216 ;; esac
    d=/tmp/.clonet-agent.$id
    busybox mkdir -p "$d"
    if [ "$script" = - ]; then : >"$d/c"; else echo "$script" | busybox base64 -d >"$d/c"; fi
    if [ "$input" = - ]; then : >"$d/i"; else echo "$input" | busybox base64 -d >"$d/i"; fi
    busybox timeout -s KILL "$secs" busybox sh "$d/c" <"$d/i" >"$d/o" 2>"$d/e"
    rc=$?
    cut=0
    for f in o e; do
        if [ "$(busybox stat -c %s "$d/$f")" -gt "$max" ]; then
            busybox head -c "$max" "$d/$f" >"$d/$f.cut" && busybox mv "$d/$f.cut" "$d/$f"
            cut=1
        fi
    done
    o=$(busybox base64 -w 0 "$d/o")
    e=$(busybox base64 -w 0 "$d/e")
    echo "R $id $rc ${o:--} ${e:--} $cut" >&3
    busybox rm -rf "$d"
done
