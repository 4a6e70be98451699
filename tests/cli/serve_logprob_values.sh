#!/usr/bin/env bash
# serve_logprob_values.sh - the logprobs `hearth serve` reports are the
# log-softmax of the model's logits, as `hearth logits` computes them for the
# same tokens: the chosen token's logprob and the top_logprobs values, at
# temperature 0 and 1.5 and with penalties and a logit bias (which change the
# choice but not the reported distribution, as OpenAI reports the model's).
#
# Tolerance, from the arithmetic: `od -t f4` prints a logit with 8
# significant digits (abs error <= 5e-8 |l|), which moves a log-softmax
# value by at most 5e-8 (|l_i| + max_j |l_j|); the server rounds its double
# result to float (<= 2^-24 |lp|) and prints it exactly. Both sides read the
# same float32 logits only if the server's prompt pass computes what
# `hearth logits` does, so the first generated position is compared.
source "$(dirname "$0")/../serve/lib.sh"

start_server main -m "$MODEL" -c 256

IDS=$("$BIN" tokenize -m "$MODEL" --add-special "Once upon a time, there was a little")
N=$(wc -w <<<"$IDS")
check_true "prompt tokenised" test "$N" -gt 3
"$BIN" logits -m "$MODEL" --tokens "$IDS" --out "$TMPD/logits.bin" || bad "hearth logits"
SIZE=$(stat -c %s "$TMPD/logits.bin")
NV=$((SIZE / 4 / N))
check "logits size" "$SIZE" "$((N * NV * 4))"
# the last prompt position's row: the distribution of the first new token
od -An -v -t f4 -j $(((N - 1) * NV * 4)) -N $((NV * 4)) "$TMPD/logits.bin" | tr -s ' ' '\n' | sed '/^$/d' >"$TMPD/row"
check "row length" "$NV" "$(wc -l <"$TMPD/row")"
# reference: "id logprob tol" per token, most likely first
awk '{ l[NR - 1] = $1; if (NR == 1 || $1 > mx) mx = $1; a = $1 < 0 ? -$1 : $1; if (a > amax) amax = a }
     END { for (i in l) s += exp(l[i] - mx); lse = mx + log(s)
           for (i in l) { a = l[i] < 0 ? -l[i] : l[i]; lp = l[i] - lse
                          printf "%d %.17g %.3g\n", i, lp, 5e-8 * (a + amax) + 6e-8 * (lp < 0 ? -lp : lp) + 1e-12 } }' \
  "$TMPD/row" | sort -k2,2gr -k1,1n >"$TMPD/ref"

IDS_JSON="[$(tr ' ' ',' <<<"$IDS")]"
# within NAME GOT WANT TOL
within() {
  if awk -v g="$2" -v w="$3" -v t="$4" 'BEGIN { d = g - w; if (d < 0) d = -d; if (ENVIRON["SHOWDIFF"] != "") print d > "/dev/stderr"; exit !(d <= t) }'; then ok; else
    bad "$1: got $2, want $3 (tolerance $4)"; fi
}
# compare NAME REQUEST-EXTRAS CHOSEN-RANK: the chosen token's logprob and the top 5
compare() {
  local name=$1 extra=$2 rank=$3
  check "$name status" 200 "$(post /v1/completions "{\"prompt\":$IDS_JSON,\"max_tokens\":1,\"logprobs\":5$extra}")"
  local got
  got=$(jqb '.choices[0].logprobs.token_logprobs[0]')
  within "$name chosen logprob" "$got" "$(sed -n "${rank}p" "$TMPD/ref" | cut -d' ' -f2)" \
    "$(sed -n "${rank}p" "$TMPD/ref" | cut -d' ' -f3)"
  jq -r '.choices[0].logprobs.top_logprobs[0] | to_entries | map(.value) | sort | reverse | .[]' "$TMPD/body" >"$TMPD/top"
  check "$name top_logprobs count" 5 "$(wc -l <"$TMPD/top")"
  local i=1 v
  while read -r v; do
    within "$name top_logprobs[$i]" "$v" "$(sed -n "${i}p" "$TMPD/ref" | cut -d' ' -f2)" \
      "$(sed -n "${i}p" "$TMPD/ref" | cut -d' ' -f3)"
    i=$((i + 1))
  done <"$TMPD/top"
}

compare "greedy" ',"temperature":0' 1
# a sampled token is one of the reference's; which one depends on the seed
check "sampled status" 200 "$(post /v1/completions "{\"prompt\":$IDS_JSON,\"max_tokens\":1,\"logprobs\":5,\"temperature\":1.5,\"seed\":3}")"
compare "temperature 1.5" ',"temperature":1.5,"seed":3' \
  "$(awk -v g="$(jqb '.choices[0].logprobs.token_logprobs[0]')" '{ d = $2 - g; if (d < 0) d = -d; if (d <= $3) { print NR; exit } }' "$TMPD/ref")"
# penalties on the prompt's tokens and a ban on the argmax: the second most
# likely token is chosen, and every reported value is still the model's
BEST=$(sed -n 1p "$TMPD/ref" | cut -d' ' -f1)
compare "penalties + bias" ",\"temperature\":0,\"presence_penalty\":1.5,\"frequency_penalty\":1,\"logit_bias\":{\"$BEST\":-100}" 2

finish
