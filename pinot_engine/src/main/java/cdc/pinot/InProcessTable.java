// The TableDataManager an upsert metadata manager is handed. A real one belongs to a running
// server (Helix, ZooKeeper); of it the upsert path only asks the table name, the data dir and
// a segment lock, so a java.lang.reflect.Proxy answering those (null / false / 0 otherwise)
// is enough.
package cdc.pinot;

import java.io.File;
import java.lang.reflect.Proxy;
import java.util.concurrent.locks.ReentrantLock;
import org.apache.pinot.segment.local.data.manager.TableDataManager;

final class InProcessTable {
  private InProcessTable() {
  }

  static TableDataManager dataManager(String tableNameWithType, File dataDir) {
    ReentrantLock lock = new ReentrantLock();
    return (TableDataManager) Proxy.newProxyInstance(TableDataManager.class.getClassLoader(),
        new Class<?>[]{TableDataManager.class}, (proxy, method, args) -> {
          switch (method.getName()) {
            case "getTableName":
              return tableNameWithType;
            case "getTableDataDir":
              return dataDir;
            case "getSegmentLock":
              return lock;
            case "toString":
              return "InProcessTable(" + tableNameWithType + ")";
            case "hashCode":
              return System.identityHashCode(proxy);
            case "equals":
              return proxy == args[0];
            default:
              Class<?> r = method.getReturnType();
              if (r == boolean.class) {
                return false;
              }
              if (r == int.class || r == long.class) {
                return r == int.class ? (Object) 0 : (Object) 0L;
              }
              return null;
          }
        });
  }
}
