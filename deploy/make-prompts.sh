#!/usr/bin/env bash
# Regenerates the SIP channel's announcements (channels/sip/prompts/*.wav) from text with
# espeak-ng: 8 kHz, mono, 16-bit PCM, as the gateway plays them (it encodes to PCMU or
# PCMA per call). The WAVs are checked in, so the gateway and its tests need neither tool;
# run this after changing a text. Needs: apt-get install espeak-ng sox.
set -euo pipefail
out="$(dirname "$0")/../channels/sip/prompts"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

say() { # name text
  espeak-ng -v cmn -s 260 -w "$tmp/$1.raw.wav" "$2"
  sox "$tmp/$1.raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$out/$1.wav" norm -3
}

# Art. 9: a caller restricted for harassing, insulting or threatening staff is told so,
# and that an emergency still gets through (Art. 15): press 1, or stay on the line and say it.
say blocked "您的号码已被限制呼入本热线。如为紧急情况，请按一，或保持通话直接说明。"
# The fallback when no agent can take the call: the citizen may leave a message.
say leave-message "坐席正忙，请在提示音后留言。"
# Art. 15: the escalation call to a linkage line (110/119/120, a unit): the notice, the
# ticket's reference read character by character, and how to acknowledge it.
say notice "这里是一二三四五热线紧急联动通知。有一条紧急工单需要贵单位立即处置，工单号尾号"
say notice-end "详情请见联动平台。确认收到请按一。"
say notice-acknowledged "已确认，谢谢。"
i=0
for d in 零 一 二 三 四 五 六 七 八 九; do say "char-$i" "$d"; i=$((i+1)); done
for c in A B C D E F; do
  espeak-ng -v en -s 200 -w "$tmp/char-$c.raw.wav" "$c"
  sox "$tmp/char-$c.raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$out/char-$c.wav" norm -3
done
ls -l "$out"
