// NUMA topology and node-local allocation through libnuma, loaded at run time with dlopen so the
// binary runs (with plain allocation and one notice) where libnuma or NUMA is missing.
#if canImport(Glibc)
import Glibc
#endif
import CThreadSetup

public final class Numa: @unchecked Sendable {
    public static let shared = Numa()

    /// Nodes and the CPUs of each; one node holding every CPU when NUMA is not available.
    public let nodeCPUs: [[Int]]
    /// Why libnuma is not used, or nil when it is.
    public let unavailableReason: String?

    private typealias AllocOnNode = @convention(c) (Int, Int32) -> UnsafeMutableRawPointer?
    private typealias Free = @convention(c) (UnsafeMutableRawPointer?, Int) -> Void
    private typealias ToNode = @convention(c) (UnsafeMutableRawPointer?, Int, Int32) -> Void
    private let allocOnNode: AllocOnNode?
    private let free: Free?
    private var toNode: ToNode?
    /// A stand-in machine (`init(nodes:)`) records which node each allocation asked for.
    private let recording: Bool
    private var requests: [(floats: Int, node: Int)] = []
    private var placed: [(start: UnsafeRawPointer, bytes: Int, node: Int)] = []
    private var requestsLock = pthread_mutex_t()

    /// A stand-in for a machine with these nodes and CPUs, for tests of placement: it pins nothing
    /// itself, allocates plain (page-aligned) memory and records the node each allocation asked for.
    public init(nodes: [[Int]]) {
        precondition(!nodes.isEmpty && nodes.allSatisfy { !$0.isEmpty })
        nodeCPUs = nodes
        unavailableReason = nil
        allocOnNode = nil; free = nil
        recording = true
        pthread_mutex_init(&requestsLock, nil)
    }

    /// With `init(nodes:)`: every `place` so far (address, bytes, node), in the order asked for.
    public var placements: [(start: UnsafeRawPointer, bytes: Int, node: Int)] {
        pthread_mutex_lock(&requestsLock)
        defer { pthread_mutex_unlock(&requestsLock) }
        return placed
    }

    /// With `init(nodes:)`: every allocation's size and node so far, in the order they were asked for.
    public var allocations: [(floats: Int, node: Int)] {
        pthread_mutex_lock(&requestsLock)
        defer { pthread_mutex_unlock(&requestsLock) }
        return requests
    }

    private init() {
        recording = false
        // The CPUs this process may use (a container or taskset may allow fewer than are online).
        var allowed = [Int32](repeating: 0, count: 4096)
        let n = Int(pt_allowed_cpus(&allowed, Int32(allowed.count)))
        let cpus = n > 0 ? allowed[0..<n].map(Int.init) : Array(0..<max(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 1))
        func fallback(_ why: String) -> ([[Int]], String) { ([cpus], why) }
        guard let lib = dlopen("libnuma.so.1", RTLD_NOW) else {
            (nodeCPUs, unavailableReason) = fallback("libnuma.so.1 not found")
            allocOnNode = nil; free = nil
            return
        }
        typealias IntFn = @convention(c) () -> Int32
        typealias NodeOfCPU = @convention(c) (Int32) -> Int32
        func sym<T>(_ name: String, _: T.Type) -> T? {
            dlsym(lib, name).map { unsafeBitCast($0, to: T.self) }
        }
        guard let available = sym("numa_available", IntFn.self), available() >= 0,
              let maxNode = sym("numa_max_node", IntFn.self),
              let nodeOf = sym("numa_node_of_cpu", NodeOfCPU.self),
              let alloc = sym("numa_alloc_onnode", AllocOnNode.self),
              let fr = sym("numa_free", Free.self)
        else {
            (nodeCPUs, unavailableReason) = fallback("NUMA is not available on this system")
            allocOnNode = nil; free = nil
            return
        }
        var nodes = [[Int]](repeating: [], count: Int(maxNode()) + 1)
        for cpu in cpus {
            let n = Int(nodeOf(Int32(cpu)))
            if n >= 0 && n < nodes.count { nodes[n].append(cpu) }
        }
        nodes.removeAll { $0.isEmpty }
        nodeCPUs = nodes.isEmpty ? [cpus] : nodes
        unavailableReason = nil
        allocOnNode = alloc; free = fr
        toNode = sym("numa_tonode_memory", ToNode.self)
    }

    public var cpuCount: Int { nodeCPUs.reduce(0) { $0 + $1.count } }

    /// The CPU for worker `w`: workers fill node 0's CPUs, then node 1's, ..., then wrap.
    public func cpu(forWorker w: Int) -> (cpu: Int, node: Int) {
        let all = nodeCPUs.enumerated().flatMap { node, cpus in cpus.map { ($0, node) } }
        return all[w % all.count]
    }

    /// Page-aligned zeroed memory on `node`; the caller's first touch places pages when libnuma is off.
    public func allocate(floats: Int, node: Int) -> UnsafeMutablePointer<Float> {
        let bytes = max(floats, 1) * MemoryLayout<Float>.stride
        if recording {
            pthread_mutex_lock(&requestsLock)
            requests.append((floats, node))
            pthread_mutex_unlock(&requestsLock)
        }
        if let allocOnNode, let p = allocOnNode(bytes, Int32(node)) {
            return p.bindMemory(to: Float.self, capacity: floats)
        }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 4096, bytes) == 0, let raw else { fatalError("out of memory allocating \(bytes) bytes") }
        return raw.bindMemory(to: Float.self, capacity: floats)
    }

    /// Asks for the pages of `bytes` bytes from `start` to come from `node` when they are first
    /// touched (the whole pages inside the range; a page it shares with a neighbour stays where
    /// the neighbour's first touch puts it). Memory not yet touched only. Nothing on one node.
    public func place(_ start: UnsafeMutableRawPointer, bytes: Int, node: Int) {
        if bytes <= 0 || nodeCPUs.count < 2 { return }
        if recording {
            pthread_mutex_lock(&requestsLock)
            placed.append((UnsafeRawPointer(start), bytes, node))
            pthread_mutex_unlock(&requestsLock)
            return
        }
        let page = 4096, first = (Int(bitPattern: start) + page - 1) / page * page, end = (Int(bitPattern: start) + bytes) / page * page
        if end > first, let toNode { toNode(UnsafeMutableRawPointer(bitPattern: first), end - first, Int32(node)) }
    }

    public func deallocate(_ p: UnsafeMutablePointer<Float>, floats: Int) {
        if let free, allocOnNode != nil {
            free(UnsafeMutableRawPointer(p), max(floats, 1) * MemoryLayout<Float>.stride)
        } else {
            Glibc.free(p)
        }
    }
}
