/* tensor/cgroup.c — the CPUs a cgroup CPU quota allows this process (docker --cpus, Kubernetes
 * CPU limits, systemd CPUQuota=): its affinity mask may show every CPU of the host while the
 * quota lets its threads run on two CPUs' worth of time, and a pool sized to the mask then
 * spends most of each step throttled.
 *
 * A quota is quota / period microseconds of CPU time per period: ceil(quota / period) CPUs, as
 * the JVM counts it (Go takes at least 2 as well). 1.5 CPUs is 2 threads, which use the whole
 * quota and are throttled for part of each period, rather than 1 that leaves a third of it
 * unused: the reference training step ran 1.39x faster so (BENCHMARKS.md, issue 11).
 *
 * Where the process's cgroup is read from:
 *   - cgroup v2: the "0::<path>" line of /proc/self/cgroup; the file <mount><path>/cpu.max
 *     ("max <period>" or "<quota> <period>");
 *   - cgroup v1: the line whose controllers include "cpu"; cpu.cfs_quota_us (-1: none) and
 *     cpu.cfs_period_us in <mount><path>.
 * A quota anywhere above the cgroup limits it as well, so every directory from <mount><path>
 * up to <mount> is read and the tightest quota counts. In a container the path is often the
 * host's while the mount shows the container's own cgroup at its root: the walk up reaches it
 * there. A path with a ".." component (a cgroup outside the process's cgroup namespace) is not
 * under the mount at all and counts as no quota. The mounts looked at are the usual ones
 * (unified, hybrid and v1 layouts), not /proc/self/mountinfo: a cgroup file system mounted
 * elsewhere is not seen. Anything missing or malformed counts as no quota.
 */
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first line of the file, in buf (size n); false if it cannot be read. */
static bool read_line(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "re");
    if (!f) return false;
    bool ok = fgets(buf, (int)n, f) != NULL;
    fclose(f);
    return ok;
}

/* The integer that *p starts with (leading blanks skipped), *p moved past it; false if there
 * is none or it does not fit. */
static bool parse_ll(const char **p, long long *v)
{
    char *end;
    errno = 0;
    *v = strtoll(*p, &end, 10);
    if (end == *p || errno) return false;
    *p = end;
    return true;
}

/* Whether s holds nothing but blanks and a newline. */
static bool rest_blank(const char *s) { return s[strspn(s, " \t\n")] == '\0'; }

/* ceil(quota / period) in CPUs, 0 when either is not a positive number of microseconds. */
static int quota_cpus(long long quota, long long period)
{
    if (quota <= 0 || period <= 0) return 0;
    long long c = quota / period + (quota % period != 0);
    return c > INT_MAX ? INT_MAX : (int)c;
}

/* The quota set in one cgroup directory, in CPUs; 0 if none. */
static int dir_quota(const char *dir, bool v2)
{
    char path[PATH_MAX + 32], line[128];
    long long quota, period;
    const char *p = line;
    if (v2) { /* "max <period>" or "<quota> <period>" */
        snprintf(path, sizeof path, "%s/cpu.max", dir);
        if (!read_line(path, line, sizeof line)) return 0;
        p += strspn(p, " \t");
        if (!strncmp(p, "max", 3)) return 0;
        if (!parse_ll(&p, &quota) || !parse_ll(&p, &period) || !rest_blank(p)) return 0;
        return quota_cpus(quota, period);
    }
    snprintf(path, sizeof path, "%s/cpu.cfs_quota_us", dir);
    if (!read_line(path, line, sizeof line) || !parse_ll(&p, &quota) || !rest_blank(p)) return 0;
    snprintf(path, sizeof path, "%s/cpu.cfs_period_us", dir);
    p = line;
    if (!read_line(path, line, sizeof line) || !parse_ll(&p, &period) || !rest_blank(p))
        return 0;
    return quota_cpus(quota, period);
}

/* The tightest quota from mount + cg up to mount, in CPUs; 0 if none. */
static int walk_up(const char *mount, const char *cg, bool v2)
{
    char dir[PATH_MAX];
    size_t base = strlen(mount);
    if (snprintf(dir, sizeof dir, "%s%s", mount, cg) >= (int)sizeof dir) return 0;
    int best = 0;
    for (;;) {
        size_t len = strlen(dir);
        while (len > base && dir[len - 1] == '/') dir[--len] = '\0'; /* "/a/b/" -> "/a/b" */
        int q = dir_quota(dir, v2);
        if (q && (!best || q < best)) best = q;
        if (len <= base) return best;
        *strrchr(dir + base, '/') = '\0'; /* dir[base] is the path's first '/' */
    }
}

/* Whether a cgroup path has a ".." component. */
static bool has_dotdot(const char *path)
{
    for (const char *p = path; (p = strstr(p, "..")); p += 2)
        if ((p == path || p[-1] == '/') && (p[2] == '/' || p[2] == '\0')) return true;
    return false;
}

/* Whether a comma-separated list of controllers names "cpu". */
static bool has_cpu(const char *list, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && list[j] != ',') j++;
        if (j - i == 3 && !strncmp(list + i, "cpu", 3)) return true;
        i = j + 1;
    }
    return false;
}

static int cgroup_cpus(const char *root)
{
    char path[PATH_MAX], line[PATH_MAX];
    snprintf(path, sizeof path, "%s/proc/self/cgroup", root);
    FILE *f = fopen(path, "re");
    if (!f) return 0;
    static const char *const v2_mounts[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
    static const char *const v1_mounts[] = {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct",
                                            "/sys/fs/cgroup/cpuacct,cpu"};
    int best = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\n");
        if (!line[len]) { /* longer than the buffer (or the last line, unended): skip it */
            int ch;
            while ((ch = fgetc(f)) != EOF && ch != '\n') {}
            if (len == sizeof line - 1) continue;
        }
        line[len] = '\0';
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2 || c2[1] != '/' || has_dotdot(c2 + 1)) continue; /* "id:controllers:/path" */
        bool v2 = c2 == c1 + 1 && !strncmp(line, "0:", 2);
        if (!v2 && !has_cpu(c1 + 1, (size_t)(c2 - c1 - 1))) continue;
        const char *const *mounts = v2 ? v2_mounts : v1_mounts;
        size_t n = v2 ? sizeof v2_mounts / sizeof *v2_mounts : sizeof v1_mounts / sizeof *v1_mounts;
        for (size_t i = 0; i < n; i++) {
            char mount[PATH_MAX];
            if (snprintf(mount, sizeof mount, "%s%s", root, mounts[i]) >= (int)sizeof mount)
                continue;
            int q = walk_up(mount, c2 + 1, v2);
            if (q && (!best || q < best)) best = q;
        }
    }
    fclose(f);
    return best;
}

int sl__cgroup_cpus(const char *root)
{
    int saved = errno; /* the caller's errno survives the files that are not there */
    int c = cgroup_cpus(root);
    errno = saved;
    return c;
}
