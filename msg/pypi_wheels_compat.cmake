# Repairs the CMake exports of the ROS 2 PyPI wheels ("ros-*" on PyPI).
#
# Why: the wheels are built in a manylinux container, and their exported
# *__rosidl_generator_py targets name that container's Python and numpy include
# directories (/opt/python/cp3XX-cp3XX/...), which do not exist on a user's
# machine; CMake then refuses to generate. This file points those imported
# targets at the include directories of the Python that runs the build.
#
# On a real ROS 2 installation no target names such a path, so this is a no-op.
# Include it after the find_package() calls of the interface package.

get_property(_derain_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
set(_derain_needs_fix FALSE)
foreach(_target IN LISTS _derain_imported)
  get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(_dirs AND "${_dirs}" MATCHES "^/opt/python/|;/opt/python/")
    set(_derain_needs_fix TRUE)
  endif()
endforeach()

if(_derain_needs_fix)
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
  foreach(_target IN LISTS _derain_imported)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_fixed "")
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^/opt/python/.*/numpy/")
        list(APPEND _fixed ${Python3_NumPy_INCLUDE_DIRS})
      elseif(_dir MATCHES "^/opt/python/")
        list(APPEND _fixed ${Python3_INCLUDE_DIRS})
      else()
        list(APPEND _fixed ${_dir})
      endif()
    endforeach()
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_fixed}")
  endforeach()
  message(STATUS "derain_ros: redirected PyPI-wheel include dirs to ${Python3_INCLUDE_DIRS}")
endif()
