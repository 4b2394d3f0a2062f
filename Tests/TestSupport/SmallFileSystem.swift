import Foundation

/// A tmpfs of a few megabytes mounted for one test (root only), for a disk that fills up.
///
/// Creating one throws unless the mount took and the path is really a mount point of its own,
/// so a test that cannot set up its private file system stops there and never fills the
/// machine's real one.
public struct SmallFileSystem: Sendable {
    public let path: String

    public init(at path: String, size: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard mount("tmpfs", path, "tmpfs", 0, "size=\(size)") == 0 else {
            throw TimeoutError("cannot mount a tmpfs on \(path): \(String(cString: strerror(errno)))")
        }
        self.path = path
        let device = { (path: String) in (try? FileManager.default.attributesOfItem(atPath: path))?[.systemNumber] as? Int }
        guard let own = device(path), let parent = device(path + "/.."), own != parent else {
            unmount()
            throw TimeoutError("\(path) is not a mount point after mounting a tmpfs on it")
        }
    }

    /// Writes zeros into `name` until the file system is full; returns the file's path.
    @discardableResult
    public func fill(_ name: String = "filler") -> String {
        let file = path + "/" + name
        let fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { return file }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0, count: 65_536)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        return file
    }

    public func unmount() {
        umount2(path, Int32(MNT_DETACH))
    }
}
