#!/usr/bin/env bash
# Regenerates the SIP channel's announcements (channels/sip/prompts/*.wav) from text with
# espeak-ng: 8 kHz, mono, 16-bit PCM, as the gateway plays them (it encodes to PCMU or
# PCMA per call). The WAVs are checked in, so the gateway and its tests need neither tool;
# run this after changing a text. Needs: apt-get install espeak-ng sox.
#
#   deploy/make-prompts.sh                          # every prompt
#   deploy/make-prompts.sh revisit revisit-thanks   # only these (sox dithers, so a
#                                                   # remade WAV differs in its low bits)
set -euo pipefail
only=" $* "
out="$(dirname "$0")/../channels/sip/prompts"
mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

say() { # name text [voice [words per minute]]
  if [[ "$only" != "  " && "$only" != *" $1 "* ]]; then return; fi
  espeak-ng -v "${3:-cmn}" -s "${4:-260}" -w "$tmp/$1.raw.wav" "$2"
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
for c in A B C D E F; do say "char-$c" "$c" en 200; done
# Art. 17: the revisit call to a citizen asks for the rating again (Art. 16's five, by
# digit; the hotline number is read digit by digit), and thanks once a digit is pressed.
say revisit "您好，这里是一二三四五热线回访。请对工单办理结果评价：非常满意请按一，满意请按二，基本满意请按三，不满意请按四，非常不满意请按五。"
say revisit-thanks "感谢您的评价，再见。"
ls -l "$out"
