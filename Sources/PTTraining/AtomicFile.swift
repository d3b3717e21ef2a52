// Files that are either the old version or the new one, never a torn mix: write a temporary
// sibling, fsync it, rename it over the target, fsync the directory.
import Foundation

public enum AtomicFile {
    /// Writes `parts` back to back to `path`. On any failure the temporary file is removed, the
    /// previous file at `path` is untouched, and the error names the path and the reason.
    public static func write(_ path: String, parts: [UnsafeRawBufferPointer]) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else {
            throw DataError(path, "directory \(dir) does not exist")
        }
        let tmp = dir + "/.\(url.lastPathComponent).tmp-\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw DataError(path, "cannot write: \(String(cString: strerror(errno)))") }
        func fail(_ what: String) -> DataError {
            let reason = String(cString: strerror(errno))
            close(fd)
            unlink(tmp)
            return DataError(path, "\(what): \(reason); the previous file, if any, is unchanged")
        }
        for part in parts {
            var offset = 0
            while offset < part.count {
                let n = Glibc.write(fd, part.baseAddress! + offset, part.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw fail("cannot write")
                }
                offset += n
            }
        }
        if fsync(fd) != 0 { throw fail("cannot flush to disk") }
        if close(fd) != 0 { unlink(tmp); throw DataError(path, "cannot close: \(String(cString: strerror(errno)))") }
        if rename(tmp, path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(tmp)
            throw DataError(path, "cannot replace: \(reason)")
        }
        let dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); close(dfd) }  // make the rename itself durable
    }

    public static func write(_ path: String, data: Data) throws {
        try data.withUnsafeBytes { try write(path, parts: [$0]) }
    }
}
