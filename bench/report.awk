# Report for bench/run.sh (mawk-compatible).  Input: results.tsv with
#   tool phase run wall_s user_s sys_s rss_kib bytes extra status
# extra = platter's bytes_new (or -), status = ok | MISMATCH | FAILED.
# Prints: per-phase details, the summary table, ratios to platter, goal checks, 16 GiB mode.
BEGIN {
    FS = "\t"; MiB = 1048576
    name["platter"] = "platter"; name["platterenc"] = "platter, encrypted"; name["cat"] = "cat (read limit)"; name["pipe"] = "dd \\| cat (pipe cost)"; name["lz4"] = "dd \\| lz4 -1"
    name["zstd"] = "dd \\| zstd -1 -T2"; name["partclone"] = "partclone.ext4"; name["qemu"] = "qemu-img qcow2"; name["qemudirect"] = "qemu-img -t none (durable)"
    name["restic"] = "restic"; name["borg"] = "borg lz4"; name["platter16"] = "platter, 16 GiB sparse"
    np = split("full incr restore", phases, " ")
    nt = split(tools, tl, " ")
    if (big == 1) tl[++nt] = "platter16"
}
{
    k = $1 SUBSEP $2; seen[k] = 1
    if ($10 == "FAILED") { nfail[k]++; next }
    if ($10 == "MISMATCH") nmis[k]++; else nok[k]++
    wall[k] = wall[k] " " $4; cpu[k] = cpu[k] " " ($5 + $6); rss[k] = rss[k] " " $7
    byt[k] = byt[k] " " $8; if ($9 != "-" && $9 != "") ext[k] = ext[k] " " $9
}
function median(s,    a, n, i, j, t) {
    n = split(s, a, " "); if (n == 0) return ""
    for (i = 2; i <= n; i++) { t = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (n % 2) ? a[(n + 1) / 2] + 0 : (a[n / 2] + a[n / 2 + 1]) / 2
}
function spread(s,    a, n, i, lo, hi) {
    n = split(s, a, " "); if (n < 2) return ""
    lo = hi = a[1] + 0
    for (i = 2; i <= n; i++) { if (a[i] + 0 < lo) lo = a[i] + 0; if (a[i] + 0 > hi) hi = a[i] + 0 }
    return sprintf("%.2f-%.2f", lo, hi)
}
function has(t, p) { return ((t SUBSEP p) in seen) }
function okp(t, p) { return (has(t, p) && wall[t SUBSEP p] != "") }
function w(t, p) { return median(wall[t SUBSEP p]) }
function f2(x) { return sprintf("%.2f", x) }
function cell(t, p, what,    k, v) {        # formatted median or FAILED / blank
    k = t SUBSEP p
    if (!has(t, p)) return ""
    if (wall[k] == "") return (what == "wall") ? "FAILED" : ""
    if (what == "wall") v = sprintf("%.2f", median(wall[k]))
    else if (what == "cpu") v = sprintf("%.2f", median(cpu[k]))
    else if (what == "rss") v = sprintf("%.0f", median(rss[k]) / 1024)
    else if (what == "mib") v = sprintf("%.1f", median(byt[k]) / MiB)
    else if (what == "ext") v = (ext[k] == "") ? "" : sprintf("%.1f", median(ext[k]) / MiB)
    if (what == "wall" && nmis[k] > 0) v = v " MISMATCH"
    if (what == "wall" && nfail[k] > 0) v = v " (" nfail[k] " FAILED)"
    return v
}
function peak(t,    i, m, k, v) {
    m = ""
    for (i = 1; i <= np; i++) { k = t SUBSEP phases[i]; if (rss[k] != "") { v = median(rss[k]); if (m == "" || v > m) m = v } }
    return (m == "") ? (has(t, "full") ? "FAILED" : "") : sprintf("%.0f", m / 1024)
}
function ratio(t, p) {
    if (!okp(t, p) || !okp("platter", p) || w("platter", p) <= 0) return ""
    return sprintf("%.2f", w(t, p) / w("platter", p))
}
function check(label, cond, nums, ph) {    # ph: the platter phase the check needs
    if (cond == "" && ph != "" && has("platter", ph) && !okp("platter", ph)) { cond = 0; nums = "platter " ph " FAILED" }
    else if (ph != "" && nfail["platter" SUBSEP ph] > 0) nums = nums ", platter " ph " FAILED in " nfail["platter" SUBSEP ph] " run(s)"
    printf "- %s %s (%s)\n", (cond == "" ? "n/a " : (cond ? "PASS" : "MISS")), label, nums
}
END {
    print "## Per phase (medians)\n"
    print "| tool | phase | wall s | wall min-max | cpu s | peak RSS MiB | MiB out/added/restored | platter bytes_new MiB | check |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= nt; i++) for (j = 1; j <= np; j++) {
        t = tl[i]; p = phases[j]; k = t SUBSEP p
        if (!has(t, p)) continue
        st = (wall[k] == "") ? "FAILED" : (p != "restore" ? "" : (nmis[k] > 0 ? "MISMATCH (" nmis[k] "/" nmis[k] + nok[k] ")" : "ok"))
        if (nfail[k] > 0 && wall[k] != "") st = st " " nfail[k] " FAILED"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", name[t], p, cell(t, p, "wall"), spread(wall[k]), cell(t, p, "cpu"), cell(t, p, "rss"), cell(t, p, "mib"), cell(t, p, "ext"), st
    }

    print "\n## Summary (medians; restores compared byte for byte)\n"
    print "| tool | full s | full cpu s | incr s | incr added MiB | restore s | repo MiB | peak RSS MiB |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for (i = 1; i <= nt; i++) {
        t = tl[i]; if (t == "platter16") continue
        rs = cell(t, "restore", "wall"); if (rs != "" && rs !~ /FAILED|MISMATCH/) rs = rs " ok"
        inc = cell(t, "incr", "mib")
        if (t == "platter" && ext[t SUBSEP "incr"] != "") inc = inc " (bytes_new " cell(t, "incr", "ext") ")"
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", name[t], cell(t, "full", "wall"), cell(t, "full", "cpu"), cell(t, "incr", "wall"), inc, rs, cell(t, "full", "mib"), peak(t)
    }

    print "\n## Ratios: peer time / platter time (>1 = platter faster)\n"
    print "| tool | full | incr | restore |"
    print "| --- | --- | --- | --- |"
    for (i = 1; i <= nt; i++) {
        t = tl[i]; if (t == "platter" || t == "platter16") continue
        printf "| %s | %s | %s | %s |\n", name[t], ratio(t, "full"), ratio(t, "incr"), ratio(t, "restore")
    }

    print "\n## Goal checks\n"
    P = okp("platter", "full"); pf = P ? w("platter", "full") : 0
    n = split("restic borg", a, " "); for (q = 1; q <= n; q++) {
        t = a[q]; r = ratio(t, "full")
        check("full backup >= 5x faster than " t, r == "" ? "" : r + 0 >= 5, r == "" ? "no data" : sprintf("%s s vs platter %s s = %sx", f2(w(t, "full")), f2(pf), r), "full")
    }
    n = split("lz4 zstd", a, " "); for (q = 1; q <= n; q++) {
        t = a[q]; r = ratio(t, "full")
        check("full backup >= 2.5x faster than dd|" t, r == "" ? "" : r + 0 >= 2.5, r == "" ? "no data" : sprintf("%s s vs platter %s s = %sx", f2(w(t, "full")), f2(pf), r), "full")
    }
    if (P && okp("lz4", "full")) { a1 = median(byt["platter" SUBSEP "full"]) / MiB; a2 = median(byt["lz4" SUBSEP "full"]) / MiB
        check("repo <= lz4 output", a1 <= a2, sprintf("%.1f MiB vs %.1f MiB", a1, a2), "full") }
    else check("repo <= lz4 output", "", "no data", "full")
    r = ratio("qemu", "incr")
    check("incremental >= 3x faster than qemu-img incremental", r == "" ? "" : r + 0 >= 3, r == "" ? "no data" : sprintf("%s s vs platter %s s = %sx", f2(w("qemu", "incr")), f2(w("platter", "incr")), r), "incr")
    if (P && okp("platter", "incr")) {
        pi = w("platter", "incr")
        check("incremental <= 25% of platter full", pi <= 0.25 * pf, sprintf("%.2f s = %.0f%% of %.2f s", pi, 100 * pi / pf, pf), "incr")
        a1 = median(byt["platter" SUBSEP "incr"]) / MiB
        check("incremental adds <= 1.2*196 = 235.2 MiB", a1 <= 235.2, sprintf("du delta %.1f MiB, bytes_new %s MiB", a1, cell("platter", "incr", "ext")), "incr")
    } else { check("incremental <= 25% of platter full", "", "no data", "incr"); check("incremental adds <= 235.2 MiB", "", "no data", "incr") }
    rd = ratio("qemudirect", "restore")
    if (rd != "") check("restore <= durable qemu-img convert -t none time", rd + 0 >= 1, sprintf("%s s vs qemu-img -t none %s s", f2(w("platter", "restore")), f2(w("qemudirect", "restore"))), "restore")
    r = ratio("qemu", "restore")
    check("restore <= qemu-img convert time", r == "" ? "" : r + 0 >= 1, r == "" ? "no data" : sprintf("%s s vs qemu-img %s s", f2(w("platter", "restore")), f2(w("qemu", "restore"))), "restore")
    r = ratio("lz4", "restore")
    check("restore >= 3x faster than lz4 -d", r == "" ? "" : r + 0 >= 3, r == "" ? "no data" : sprintf("%s s vs lz4 -d %s s = %sx", f2(w("platter", "restore")), f2(w("lz4", "restore")), r), "restore")
    if (okp("platter", "restore")) {
        v = (nmis["platter" SUBSEP "restore"] > 0 || nfail["platter" SUBSEP "restore"] > 0) ? 0 : 1
        check("restore byte-identical", v, v ? "cmp ok in every run" : nmis["platter" SUBSEP "restore"] + 0 " MISMATCH", "restore")
    } else check("restore byte-identical", "", "no data", "restore")
    n = split("full incr restore", a, " "); for (q = 1; q <= n; q++) {
        r = ratio("platterenc", a[q])
        if (r != "") check("encrypted " a[q] " within 15% of plain", r + 0 <= 1.15, sprintf("%s s vs %s s = +%.0f%%", f2(w("platterenc", a[q])), f2(w("platter", a[q])), 100 * (r - 1)), a[q])
    }
    if (okp("platterenc", "unlock")) printf "- unlocking with the default Argon2id (256 MiB, passes calibrated at init): %s s per command (`platter snapshots` on an empty repository)\n", f2(w("platterenc", "unlock"))
    m = peak("platter"); m16 = (big == 1) ? peak("platter16") : ""
    mm = m; if (m16 != "" && m16 != "FAILED" && (m == "FAILED" || m16 + 0 > mm + 0)) mm = m16
    check("peak RSS <= 100 MiB", (mm == "" || mm == "FAILED") ? "" : mm + 0 <= 100, sprintf("4 GiB: %s%s", (m == "" || m == "FAILED") ? "no data" : m " MiB", big == 1 ? ", 16 GiB: " m16 " MiB" : ""))
    if (big == 1) {
        print "\n## 16 GiB mode (4 copies of disk0.img back to back, sparse; copies 2-4 dedup against copy 1)\n"
        print "| phase | wall s | cpu s | peak RSS MiB | MiB repo/restored | check |"
        print "| --- | --- | --- | --- | --- | --- |"
        for (j = 1; j <= np; j++) { p = phases[j]; if (!has("platter16", p)) continue
            k = "platter16" SUBSEP p
            printf "| %s | %s | %s | %s | %s | %s |\n", p, cell("platter16", p, "wall"), cell("platter16", p, "cpu"), cell("platter16", p, "rss"), cell("platter16", p, "mib"), (wall[k] == "" ? "FAILED" : (p == "restore" ? (nmis[k] > 0 ? "MISMATCH" : "ok") : "")) }
    }
}
