# Turns a run's results.tsv (written by bench/run.sh) into the Markdown tables of RESULTS.md.
# Input columns: workload, store size (empty for the fixed workloads), contender, req/s (median),
# p50 ms, p99 ms (medians), errors, note, req/s of each repetition. POSIX awk.
BEGIN {
    FS = "\t"
    title["get1k"] = "GET a 1 KiB record (64 connections)"
    title["put1k"] = "PUT a 1 KiB record, durable (64 connections)"
    title["mixed"] = "Mixed: 90% GET / 10% PUT of 1 KiB records (64 connections)"
    title["get64m"] = "GET a 64 MiB record (4 connections)"
    title["put64m"] = "PUT a 64 MiB record, durable (4 connections)"
    title["stores"] = "List stores: one page of 101 stores (64 connections)"
    title["list1000"] = "List keys: a page of 1000 after a random key (64 connections; etcd's range returns the 64-byte values too)"
    title["list1000p"] = "List keys: a page of 1000 with a random prefix that matches 1000 keys (64 connections)"
    title["list100"] = "List keys: a page of 100 after a random key (64 connections)"
    title["list100p"] = "List keys: a page of 100 with a random prefix that matches 1000 keys (64 connections)"
    title["scale_get"] = "GET a 1 KiB record by store size: 1000 hot keys spread over the store (64 connections)"
    title["scale_put"] = "PUT a 1 KiB record (overwrite) by store size, durable (64 connections)"
    nfixed = split("get1k put1k mixed get64m put64m stores", fixed, " ")
    title["list1000_after_put"] = "List keys: the pages of 1000 again, right after the PUT stage overwrote the hot keys (64 connections)"
    nscaled = split("list1000 list1000p list100 list100p scale_get scale_put list1000_after_put", scaled, " ")
    nsizes = split(sizes, size, " ")
    E = "kvstore (embedded)"
    P = "kvstore (PostgreSQL)"
    SV = "SeaweedFS volume server, GET by file id"
    SS = "SeaweedFS S3 gateway"
    SP = "SeaweedFS S3 gateway (no fsync per write)"
}

{
    w = $1; s = $2; c = $3
    k = w SUBSEP s SUBSEP c
    rps[k] = $4; p50[k] = $5; p99[k] = $6; err[k] = $7; note[k] = $8; reps[k] = $9; cpu[k] = $10
    if (!((w, c) in seen)) {
        seen[w, c] = 1
        n = ++ncont[w]
        cont[w, n] = c
    }
}

function num(x) { return x != "" && x != "nan" && x != "-" }
function fmt(x) {
    if (!num(x)) return "—"
    if (x + 0 >= 100) return sprintf("%.0f", x)
    if (x + 0 >= 10) return sprintf("%.1f", x)
    return sprintf("%.2f", x)
}
function ratio(a, b) { return (num(a) && num(b) && b + 0 > 0) ? sprintf("%.2f×", a / b) : "—" }
function val(w, s, c, what,    key) {
    key = w SUBSEP s SUBSEP c
    if (!(key in rps)) return ""
    if (what == "p50") return p50[key]
    if (what == "p99") return p99[key]
    if (what == "cpu") return cpu[key]
    if (what == "err") return err[key]
    return rps[key]
}
function notes(k,    t) {
    t = ""
    if (err[k] + 0 > 0) t = err[k] " errors/non-2xx"
    if (note[k] != "") t = t (t != "" ? "; " : "") "*" note[k] "*"
    return t
}
function verdict(ok, errors) {
    if (errors + 0 > 0) return "❌ missed (errors)"
    return ok ? "✅ met" : "❌ missed"
}
# errors: failed requests (socket errors, timeouts, non-2xx answers, failed transactions, runs
# without a result) of the rows the figure comes from. A target is met only without any: a server
# that answers errors fast must not meet a throughput target.
function target(name, measured, goal, ok, known, bycpu, errors) {
    if (!known) { print "| " name " | not measured | " goal " | — | |"; return }
    if (errors + 0 > 0) measured = measured " (" errors " errors)"
    print "| " name " | " measured " | " goal " | " verdict(ok, errors) " | " bycpu " |"
}
# lo: the ratio must be at least this; hi: at most this (whichever is given). ca, cb: the server CPU
# per request of the two sides, when known: cb / ca is what the throughput ratio would be on an
# otherwise idle server core, so it is shown beside the measured ratio.
# ea, eb: the errors of the two sides' rows.
function check_ratio(name, a, b, goal, lo, hi, ca, cb, ea, eb,    r, bycpu) {
    if (!(num(a) && num(b) && b + 0 > 0)) { target(name, "", goal, 0, 0); return }
    r = a / b
    bycpu = (num(ca) && num(cb) && ca + 0 > 0) ? sprintf("%.2f× (%s vs %s µs)", cb / ca, fmt(ca), fmt(cb)) : ""
    target(name, sprintf("%.2f×", r), goal, (lo != "" ? r >= lo : r <= hi), 1, bycpu, ea + eb)
}

END {
    # --- targets ---
    print "### Targets"
    print ""
    print "Measured ratios are req/s ÷ req/s in this run. *By server CPU per request*: the ratio of the"
    print "CPU time each server used per request (its process and children; for kvstore on PostgreSQL,"
    print "without the database's), which is what the throughput ratio would be with the server core to"
    print "itself: the figure to trust when other processes competed for the cores."
    print ""
    print "| target | measured | goal | | by server CPU per request |"
    print "|---|---|---|---|---|"
    check_ratio("GET 1 KiB, embedded ÷ nginx static file", val("get1k", "", E), val("get1k", "", "nginx static file"), "≥ 1.0×", 1.0, "", val("get1k", "", E, "cpu"), val("get1k", "", "nginx static file", "cpu"), val("get1k", "", E, "err"), val("get1k", "", "nginx static file", "err"))
    check_ratio("GET 1 KiB, embedded ÷ bare axum/hyper", val("get1k", "", E), val("get1k", "", "bare axum/hyper (1 KiB body)"), "≥ 0.7×", 0.7, "", val("get1k", "", E, "cpu"), val("get1k", "", "bare axum/hyper (1 KiB body)", "cpu"), val("get1k", "", E, "err"), val("get1k", "", "bare axum/hyper (1 KiB body)", "err"))
    check_ratio("GET 1 KiB, embedded ÷ SeaweedFS volume server by file id", val("get1k", "", E), val("get1k", "", SV), "≥ 1.0×", 1.0, "", val("get1k", "", E, "cpu"), val("get1k", "", SV, "cpu"), val("get1k", "", E, "err"), val("get1k", "", SV, "err"))
    check_ratio("GET 1 KiB, embedded ÷ SeaweedFS S3 gateway", val("get1k", "", E), val("get1k", "", SS), "≥ 1.5×", 1.5, "", val("get1k", "", E, "cpu"), val("get1k", "", SS, "cpu"), val("get1k", "", E, "err"), val("get1k", "", SS, "err"))
    check_ratio("PUT 1 KiB durable, embedded ÷ SeaweedFS S3 PUT (which does not fsync each write)", val("put1k", "", E), val("put1k", "", SP), "≥ 1.0×", 1.0, "", val("put1k", "", E, "cpu"), val("put1k", "", SP, "cpu"), val("put1k", "", E, "err"), val("put1k", "", SP, "err"))
    check_ratio("PUT 1 KiB durable, embedded ÷ etcd put", val("put1k", "", E), val("put1k", "", "etcd put (JSON gateway)"), "≥ 3×", 3, "", val("put1k", "", E, "cpu"), val("put1k", "", "etcd put (JSON gateway)", "cpu"), val("put1k", "", E, "err"), val("put1k", "", "etcd put (JSON gateway)", "err"))
    check_ratio("List 1000, p50 at " largest " keys ÷ p50 at " smallest " keys (embedded)", val("list1000", largest, E, "p50"), val("list1000", smallest, E, "p50"), "≤ 1.5×", "", 1.5, "", "", val("list1000", largest, E, "err"), val("list1000", smallest, E, "err"))
    check_ratio("List 1000, p50 at " largest " keys ÷ p50 at " smallest " keys (PostgreSQL backend)", val("list1000", largest, P, "p50"), val("list1000", smallest, P, "p50"), "≤ 1.5×", "", 1.5, "", "", val("list1000", largest, P, "err"), val("list1000", smallest, P, "err"))
    check_ratio("GET 1 KiB at " largest " keys ÷ at " smallest " keys (embedded)", val("scale_get", largest, E), val("scale_get", smallest, E), "≥ 0.8×", 0.8, "", val("scale_get", largest, E, "cpu"), val("scale_get", smallest, E, "cpu"), val("scale_get", largest, E, "err"), val("scale_get", smallest, E, "err"))
    check_ratio("PUT 1 KiB at " largest " keys ÷ at " smallest " keys (embedded)", val("scale_put", largest, E), val("scale_put", smallest, E), "≥ 0.8×", 0.8, "", val("scale_put", largest, E, "cpu"), val("scale_put", smallest, E, "cpu"), val("scale_put", largest, E, "err"), val("scale_put", smallest, E, "err"))
    check_ratio("GET 1 KiB at " largest " keys ÷ at " smallest " keys (PostgreSQL backend)", val("scale_get", largest, P), val("scale_get", smallest, P), "≥ 0.8×", 0.8, "", val("scale_get", largest, P, "cpu"), val("scale_get", smallest, P, "cpu"), val("scale_get", largest, P, "err"), val("scale_get", smallest, P, "err"))
    check_ratio("PUT 1 KiB at " largest " keys ÷ at " smallest " keys (PostgreSQL backend)", val("scale_put", largest, P), val("scale_put", smallest, P), "≥ 0.8×", 0.8, "", val("scale_put", largest, P, "cpu"), val("scale_put", smallest, P, "cpu"), val("scale_put", largest, P, "err"), val("scale_put", smallest, P, "err"))
    check_ratio("GET 64 MiB, embedded ÷ nginx", val("get64m", "", E), val("get64m", "", "nginx static file"), "≥ 0.5×", 0.5, "", val("get64m", "", E, "cpu"), val("get64m", "", "nginx static file", "cpu"), val("get64m", "", E, "err"), val("get64m", "", "nginx static file", "err"))
    rss_target("embedded", "GET", rss_idle_e, rss_get_e)
    rss_target("embedded", "PUT", rss_idle_e, rss_put_e)
    rss_target("PostgreSQL", "GET", rss_idle_p, rss_get_p)
    rss_target("PostgreSQL", "PUT", rss_idle_p, rss_put_p)
    if (rss_large_e != "") target("Peak RSS serving the " largest "-key store (embedded)", sprintf("%.0f MiB", rss_large_e / 1024), "≤ 256 MiB", rss_large_e <= 262144, 1)
    else target("Peak RSS serving the " largest "-key store (embedded)", "", "≤ 256 MiB", 0, 0)
    if (rss_large_p != "") target("Peak RSS serving the " largest "-key store (PostgreSQL backend)", sprintf("%.0f MiB", rss_large_p / 1024), "≤ 256 MiB", rss_large_p <= 262144, 1)
    startup_target("embedded", "a clean stop", start_clean_e)
    startup_target("embedded", "kill -9 during writes", start_kill_e)
    startup_target("PostgreSQL backend", "a clean stop", start_clean_p)
    startup_target("PostgreSQL backend", "kill -9 during writes", start_kill_p)
    check_ratio("GET 1 KiB, PostgreSQL backend ÷ PostgreSQL prepared SELECT", val("get1k", "", P), val("get1k", "", "PostgreSQL: prepared SELECT by key (pgbench)"), "≥ 0.7×", 0.7, "", "", "", val("get1k", "", P, "err"), val("get1k", "", "PostgreSQL: prepared SELECT by key (pgbench)", "err"))
    check_ratio("PUT 1 KiB, PostgreSQL backend ÷ PostgreSQL prepared upsert", val("put1k", "", P), val("put1k", "", "PostgreSQL: prepared INSERT … ON CONFLICT (pgbench)"), "≥ 0.7×", 0.7, "", "", "", val("put1k", "", P, "err"), val("put1k", "", "PostgreSQL: prepared INSERT … ON CONFLICT (pgbench)", "err"))
    print ""
    if (largest + 0 < 10000000)
        print "The size targets are stated for 10 million keys; this run's largest store has " largest " keys."
    print ""

    # --- fixed workloads: each contender side by side ---
    for (i = 1; i <= nfixed; i++) {
        w = fixed[i]
        if (!(w in ncont)) continue
        big = (w ~ /64m/)
        print "### " title[w]
        print ""
        print "| contender | req/s" (big ? " | MiB/s" : "") " | p50 ms | p99 ms | server CPU µs/req | embedded ÷ this | PostgreSQL backend ÷ this | notes |"
        print "|---|---:" (big ? "|---:" : "") "|---:|---:|---:|---:|---:|---|"
        e = val(w, "", E); p = val(w, "", P)
        # kvstore's rows first, then the references in the order they ran.
        m = 0
        if ((w, E) in seen) order[++m] = E
        if ((w, P) in seen) order[++m] = P
        for (j = 1; j <= ncont[w]; j++) if (cont[w, j] != E && cont[w, j] != P) order[++m] = cont[w, j]
        for (j = 1; j <= m; j++) {
            c = order[j]
            k = w SUBSEP "" SUBSEP c
            r = rps[k]
            line = "| " c " | " fmt(r)
            if (big) line = line " | " (num(r) ? sprintf("%.0f", r * 64) : "—")
            line = line " | " fmt(p50[k]) " | " fmt(p99[k]) " | " fmt(cpu[k])
            line = line " | " (c == E ? "—" : ratio(e, r)) " | " (c == P ? "—" : ratio(p, r)) " | " notes(k) " |"
            print line
        }
        print ""
    }

    # --- workloads by store size ---
    for (i = 1; i <= nscaled; i++) {
        w = scaled[i]
        if (!(w in ncont)) continue
        print "### " title[w]
        print ""
        head = "| keys in the store |"
        rule = "|---:|"
        m = 0
        if ((w, E) in seen) order[++m] = E
        if ((w, P) in seen) order[++m] = P
        for (j = 1; j <= ncont[w]; j++) if (cont[w, j] != E && cont[w, j] != P) order[++m] = cont[w, j]
        for (j = 1; j <= m; j++) cont[w, j] = order[j]
        for (j = 1; j <= ncont[w]; j++) {
            head = head " " cont[w, j] " req/s | p50 ms | p99 ms |"
            rule = rule "---:|---:|---:|"
        }
        print head
        print rule
        for (z = 1; z <= nsizes; z++) {
            s = size[z]
            line = "| " s " |"
            any = 0
            for (j = 1; j <= ncont[w]; j++) {
                k = w SUBSEP s SUBSEP cont[w, j]
                if (k in rps) any = 1
                line = line " " fmt(rps[k]) " | " fmt(p50[k]) " | " fmt(p99[k]) " |"
            }
            if (any) print line
        }
        # How each figure grows with the store's size.
        line = "| growth, " smallest " → " largest " |"
        for (j = 1; j <= ncont[w]; j++) {
            c = cont[w, j]
            line = line " " ratio(val(w, largest, c), val(w, smallest, c)) " | " ratio(val(w, largest, c, "p50"), val(w, smallest, c, "p50")) " | " ratio(val(w, largest, c, "p99"), val(w, smallest, c, "p99")) " |"
        }
        print line
        extra = ""
        for (j = 1; j <= ncont[w]; j++)
            for (z = 1; z <= nsizes; z++) {
                k = w SUBSEP size[z] SUBSEP cont[w, j]
                if ((k in rps) && notes(k) != "") extra = extra "- " cont[w, j] " at " size[z] " keys: " notes(k) "\n"
            }
        if (extra != "") printf "\n%s", extra
        print ""
    }
}

function rss_target(backend, what, idle, peak) {
    name = "Peak RSS during 64 MiB " what " ≤ idle + 3 × 64 MiB (" backend ")"
    if (idle == "" || peak == "") { target(name, "", "≤ idle + 192 MiB", 0, 0); return }
    target(name, sprintf("idle %.0f MiB, peak %.0f MiB (+%.0f)", idle / 1024, peak / 1024, (peak - idle) / 1024), "≤ +192 MiB", peak - idle <= 196608, 1)
}

function startup_target(backend, after, secs) {
    name = "Start-up on the " largest "-key store after " after " (" backend ")"
    if (secs == "") { target(name, "", "≤ 1 s", 0, 0); return }
    target(name, sprintf("%.2f s (worst of the tries)", secs), "≤ 1 s", secs <= 1, 1)
}
