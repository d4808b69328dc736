// A stored value -> the JSON value a Pinot query returns for it: Pinot's own
// DataSchema.ColumnDataType conversion (BOOLEAN true/false, BIG_DECIMAL plain string, BYTES
// hex, TIMESTAMP as text), element-wise for multi-value columns, null for a null-handling NULL.
package cdc.pinot;

import java.util.ArrayList;
import java.util.List;
import org.apache.pinot.common.utils.DataSchema.ColumnDataType;
import org.apache.pinot.spi.data.FieldSpec;
import org.apache.pinot.spi.data.readers.GenericRow;
import org.apache.pinot.spi.utils.ByteArray;

final class PinotValues {
  private PinotValues() {
  }

  static Object of(FieldSpec spec, GenericRow row) {
    String column = spec.getName();
    if (row.isNullValue(column)) {
      return null;
    }
    Object value = row.getValue(column);
    if (value == null) {
      return null;
    }
    ColumnDataType type = ColumnDataType.fromDataTypeSV(spec.getDataType());
    if (spec.isSingleValueField()) {
      return scalar(type, value);
    }
    List<Object> values = new ArrayList<>();
    for (Object element : (Object[]) value) {
      values.add(scalar(type, element));
    }
    return values;
  }

  private static Object scalar(ColumnDataType type, Object value) {
    if (value instanceof byte[]) {
      value = new ByteArray((byte[]) value);
    }
    return type.convertAndFormat(value);
  }
}
