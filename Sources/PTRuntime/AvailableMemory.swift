// How much memory this process can still take: what the kernel says it can hand out without
// swapping (MemAvailable), or less where a cgroup (a container, a CI job) caps the process.
import Foundation

public enum AvailableMemory {
    /// Bytes, or nil where neither source can be read.
    public static func bytes() -> Int? {
        var best: Int?
        if let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("MemAvailable:") }),
           let kb = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) {
            best = kb * 1024
        }
        // cgroup v2: the limit ("max" when none) less what the group already uses.
        func read(_ name: String) -> Int? {
            (try? String(contentsOfFile: "/sys/fs/cgroup/" + name, encoding: .utf8))
                .flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        if let limit = read("memory.max"), let used = read("memory.current") {
            best = min(best ?? .max, max(limit - used, 0))
        }
        return best
    }

    /// `bytes` in the unit a reader takes in at a glance: "245.8 MB", "11.3 GB".
    public static func describe(_ bytes: Int) -> String {
        let b = Double(bytes)
        if b >= 1e9 { return String(format: "%.1f GB", b / 1e9) }
        if b >= 1e6 { return String(format: "%.1f MB", b / 1e6) }
        return String(format: "%.1f kB", b / 1e3)
    }
}
